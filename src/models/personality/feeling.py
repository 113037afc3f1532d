"""`CharacterFeeling`: how one character hears emotion and shows its own, over one base model.

`PersonalityModel` delegates to it everything that reads the emotion classifier:

* **hearing**: a user's message moves the session's `EmotionalState` (`observe`, by the
  `listener`: the shipped listener, or the classifier a caller or `classifier:` names), and a
  reply's own emotion is reported back (`detect`);
* **showing**: the control mode (an emotion token the base model was trained with, the
  emotion in words, or none), the steering table that leans each decoding step toward the
  state's words (`steering`), and the agreement that best-of-N ranks candidates by (`agreement`).

The classifier is loaded on first use and its absence is not fatal: the state then only
decays, and steering and ranking by emotion are off. The steering table is built once per
classifier and tokenizer, under a lock, so concurrent first turns share one table (a batching
scheduler groups rows by it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from models.errors import DataError
from models.personality.emotion import default_classifier, default_listener, project
from models.personality.extension import EmotionSettings
from models.personality.params import PersonalityParams
from models.personality.sessions import Session

__all__ = ["CharacterFeeling"]

log = logging.getLogger(__name__)


class CharacterFeeling:
    """A character's emotion settings, its base model's tokenizer and the classifier, together."""

    def __init__(
        self,
        name: str,
        emotion: EmotionSettings,
        params: Callable[[], PersonalityParams],
        codec: Any,
        classifier: Any = None,
        trained: bool | None = None,
    ) -> None:
        self.name = name
        self.emotion = emotion
        self._params = params
        """The owner's settings as they are now (a personality's `params` may be replaced)."""
        self.codec = codec
        """The base model's tokenizer (None for remote engines)."""
        self._classifier = classifier
        self._classifier_failed = False
        self._listener = classifier
        self._steering: Any = None
        self._lock = threading.Lock()
        self.control = self._control_mode(trained)
        """`token`, `prompt` or `none`: how the state reaches the base model."""

    def _control_mode(self, trained: bool | None) -> str:
        mode = self._params().emotion_control
        has_tokens = bool(getattr(self.codec, "has_emotion_tokens", False))
        if mode == "auto":
            return "token" if has_tokens and trained else "prompt"
        if mode == "token" and not has_tokens:
            log.warning("%s: the base model has no emotion tokens; emotion goes into the prompt", self.name)
            return "prompt"
        return mode

    @property
    def classifier(self) -> Any:
        """The emotion classifier (None when it cannot be loaded: detection is then skipped)."""
        if self._classifier is None and not self._classifier_failed:
            try:
                self._classifier = default_classifier(self._params().classifier)
            except (DataError, OSError) as exc:
                self._classifier_failed = True
                log.warning("%s: no emotion classifier (%s); the state will only decay", self.name, exc)
        return self._classifier

    @property
    def listener(self) -> Any:
        """The classifier that hears messages: the one given to this character or named by
        `classifier:`, else the shipped listener (`default_listener`); None like `classifier`."""
        if self._listener is None and not self._classifier_failed:
            if self._params().classifier is not None:
                self._listener = self.classifier
            else:
                try:
                    self._listener = default_listener()
                except (DataError, OSError) as exc:
                    log.warning("%s: no emotion listener (%s); the classifier hears messages", self.name, exc)
                    self._listener = self.classifier
        return self._listener

    @property
    def steering(self) -> Any:
        """The `EmotionSteering` over the base model's tokenizer, or None when steering is off
        (`emotion_steering: 0`, `emotion_control: none`), the engine has no local logits
        (remote models) or there is no classifier."""
        p = self._params()
        if p.emotion_steering <= 0 or self.control == "none":
            return None
        clf = self.classifier
        if self.codec is None or clf is None or not hasattr(self.codec, "id_to_token"):
            return None
        from models.personality.steering import EmotionSteering

        emo = self.emotion
        with self._lock:  # concurrent first turns share one table (and one batch group)
            self._steering = EmotionSteering.reuse_or_build(
                self._steering, clf, self.codec, emo.labels, emo.label_map, p.emotion_steering, p.steering_margin
            )
            return self._steering

    def observe(self, session: Session, message: str) -> None:
        """A user's message: the state decays toward the temperament, then moves toward what
        the message expresses, as far as the listener is sure of it."""
        clf = self.listener
        session.state.relax()
        if clf is None:
            return
        det = clf.detect(message)
        emo = self.emotion
        session.state.observe(project(det.distribution, emo.labels, emo.label_map), det.intensity)

    def agreement(self, text: str, emotion: str | None) -> float:
        """The classifier's probability that `text` expresses `emotion` (0 with no classifier,
        no emotion or no text): what best-of-N ranks candidates by."""
        if self.classifier is None or not emotion or not text.strip():
            return 0.0
        emo = self.emotion
        return project(self.classifier.detect(text).distribution, emo.labels, emo.label_map).get(emotion, 0.0)

    def detect(self, text: str) -> str | None:
        """The emotion a reply reads as (the classifier's own label, the view ranking picks by),
        or None."""
        clf = self.classifier
        return clf.detect(text).label if clf is not None and text else None
