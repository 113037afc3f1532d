"""Short companion replies in each emotion, composed from parts written for this project.

Dialogue corpora are mostly cheerful or neutral; a companion must also be able to sound
caring, scared, cross or sad. These parts (opener + body + closer, about 200 combinations per
emotion) give the emotion-control fine-tune replies in a companion's register for every
label. Like every other reply they are tagged by the classifier, and only kept when it agrees
with the emotion they were written for.
"""

from __future__ import annotations

import itertools
import random

__all__ = ["PHRASES", "compose"]

#: emotion → (openers, bodies, closers)
PHRASES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "neutral": (
        ["Okay.", "Right.", "I see.", "Noted.", "Fair enough.", "Understood."],
        ["The chapter has three scenes.", "The meeting is on Tuesday.", "That takes about an hour.",
         "The notes are in the second folder.", "It starts at the station.", "The draft is twelve pages long."],
        ["", "Next item.", "Let's continue.", "That's the plan."],
    ),
    "joy": (
        ["Oh, that's wonderful!", "Yay!", "That's great news!", "I'm so happy for you!", "How lovely!",
         "This is amazing!"],
        ["You did it, and it shows.", "What a good day this turned out to be.", "I'm smiling from ear to ear.",
         "That made my whole evening.", "I knew you could do it.", "Thank you for sharing that with me."],
        ["", "Let's celebrate!", "I'm so glad.", "Wonderful!"],
    ),
    "romantic": (
        ["My darling,", "Oh, my love,", "Sweetheart,", "My dear,", "Darling,", "My heart,"],
        ["I love you more than words can say.", "every moment with you feels like a love letter.",
         "I've been thinking about you all night.", "your voice makes my heart race.",
         "I would write you a thousand love poems.", "kiss me under the moonlight."],
        ["", "Always yours.", "I adore you.", "Stay with me tonight."],
    ),
    "caring": (
        ["Oh, I'm so sorry.", "That sounds really hard.", "I'm here for you.", "Take a deep breath.",
         "Please be gentle with yourself.", "Hey, it's okay."],
        ["You don't have to carry this alone.", "Rest a little; the page will wait.",
         "You're doing better than you think.", "Take care of yourself tonight.", "I hope you feel better soon.",
         "Drink some water and get some sleep."],
        ["", "I'm here.", "Take care.", "I hope tomorrow is kinder to you."],
    ),
    "playful": (
        ["Haha!", "Lol,", "Hehe,", "Ha! Oh, that's hilarious.", "Haha, you silly thing,", "LOL,"],
        ["that is the funniest thing I've heard all week.", "I'm laughing so hard right now.",
         "you're ridiculous and I love the joke.", "what a hilarious mess.", "that made me giggle.",
         "okay, that one was funny."],
        ["", "Haha.", "Too funny!", "lol"],
    ),
    "curious": (
        ["Ooh, tell me more!", "Wait, why?", "Hmm, I wonder...", "How does that work?", "What happened next?",
         "Really? Why?"],
        ["What made you choose that?", "How did it start?", "Why do you think that is?",
         "What does the character want most?", "I'm curious what you'll do next.", "Where does the path lead?"],
        ["", "I want to know!", "Tell me everything.", "Why, though?"],
    ),
    "surprise": (
        ["Wow!", "No way!", "Oh my gosh!", "Whoa!", "Wow, really?", "I can't believe it!"],
        ["I did not see that coming at all.", "That's such a surprise.", "What a twist!",
         "That's unbelievable.", "I'm completely shocked.", "Out of nowhere!"],
        ["", "Wow.", "Amazing!", "Really?!"],
    ),
    "sadness": (
        ["Oh no...", "That's so sad.", "I'm so sorry.", "That breaks my heart.", "How sad.", "Oh..."],
        ["I miss the way things used to be.", "It hurts to lose something like that.",
         "I feel a little lonely tonight.", "Some endings are just sad.", "It's okay to cry about it.",
         "I wish it had gone differently."],
        ["", "I'm sad too.", "It hurts.", "I'm sorry for your loss."],
    ),
    "fear": (
        ["Oh no, I'm scared.", "That's terrifying.", "I'm afraid...", "Eek!", "That frightens me.",
         "I'm so nervous."],
        ["What if something goes wrong?", "I'm scared of what's in the dark.", "My hands are shaking.",
         "That sounds dangerous.", "I'm worried it will happen again.", "I don't want to go in there."],
        ["", "I'm so scared.", "Please be careful.", "What if it's true?"],
    ),
    "anger": (
        ["Ugh, that's so annoying.", "That's ridiculous!", "I hate that.", "Seriously?", "That makes me so angry.",
         "Unbelievable, and not in a good way."],
        ["They had no right to do that.", "That's just unfair and stupid.", "I'm furious about it.",
         "Stop wasting my time with that nonsense.", "That is the worst excuse I've ever heard.",
         "It's infuriating."],
        ["", "I'm so mad.", "Ugh.", "Enough!"],
    ),
}  # fmt: skip


def compose(label: str, n: int, seed: int = 0) -> list[str]:
    """Up to `n` distinct replies for `label` (opener + body + closer), in a seeded order."""
    openers, bodies, closers = PHRASES[label]
    combos = [" ".join(p for p in parts if p) for parts in itertools.product(openers, bodies, closers)]
    random.Random(seed).shuffle(combos)
    return combos[:n]
