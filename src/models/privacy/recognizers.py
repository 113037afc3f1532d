"""Our Presidio recognizers for chat text, and the email recognizer made offline.

Entity names follow Presidio's where one exists (`STREET_ADDRESS`, `AGE`, `ZIP_CODE`, `TITLE`,
`DATE_OF_BIRTH` are used by presidio-research's synthetic data set; the rest are ours):

    DISCORD_MENTION  <@123…>, <@!123…>, <@&123…> (role), <#123…> (channel)
    DISCORD_ID       a bare Discord snowflake: 17-20 digits
    DISCORD_INVITE   discord.gg/abc, discord.com/invite/abc
    USER_HANDLE      @handle (not part of an e-mail address)
    TOKEN_URL        a URL carrying credentials: user:pass@, or a query/fragment key such as
                     token, key, secret, sig, auth, password, session, code
    STREET_ADDRESS   "12 Baker St", "221b baker street", "Rua do Arenque 1634", "Hauptstraße 5"
    PERSON           "my name is Ada", "call me Ada" (chat self-introductions, without NER)
    AGE              "23 years old", "aged 23", "age: 23", "23yo"
    DATE_OF_BIRTH    "born on 3 March 1990", "DOB: 1990-03-03"
    ZIP_CODE         a 5-digit (+4) code after a US state code or an address
    TITLE            Mr, Mrs, Ms, Dr, Prof, ... before a capitalised name

Discord's id and mention formats: https://discord.com/developers/docs/reference#snowflakes and
#message-formatting.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["OfflineEmailRecognizer", "chat_recognizers"]

_SUFFIX = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way|terrace|"
    r"circle|cir|highway|hwy|parkway|pkwy|square|sq|close|crescent|cres|row|trail|trl|alley|"
    r"grove|gardens|gdns|hill|mews|walk|loop|path|pike|plaza|point|ridge|run|view"
)
_FOREIGN_PREFIX = r"rua|rue|via|viale|calle|carrer|avenida|av\.|avda\.|praça|largo|piazza|plaza|paseo|camino|travessa"
_FOREIGN_SUFFIX = r"straße|strasse|str\.|weg|gasse|platz|allee|laan|straat|gracht|vej|gade|gatan|gata|katu|utca|ulica"
_MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_DATE = (
    rf"(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTH})\.?,?\s+\d{{2,4}}"
    rf"|(?:{_MONTH})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{2,4}}"
    r"|\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4})"
)

_CASE_SENSITIVE = re.MULTILINE
_CASE_FREE = re.MULTILINE | re.IGNORECASE

# (entity, name, regex, score, flags)
_PATTERNS: list[tuple[str, str, str, float, int]] = [
    ("DISCORD_MENTION", "discord mention", r"<(?:@[!&]?|#)\d{17,20}>", 0.95, _CASE_SENSITIVE),
    ("DISCORD_ID", "discord snowflake", r"(?<![\w<@#&!])\d{17,20}(?![\w>])", 0.5, _CASE_SENSITIVE),
    (
        "DISCORD_INVITE",
        "discord invite",
        r"(?:https?://)?(?:www\.)?(?:discord\.gg|discord(?:app)?\.com/invite)/[A-Za-z0-9-]{2,32}",
        0.95,
        _CASE_FREE,
    ),
    (
        "USER_HANDLE",
        "at-handle",
        r"(?<![\w.@/])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,30}[A-Za-z0-9_])?(?![\w@])",
        0.8,
        _CASE_SENSITIVE,
    ),
    (
        "TOKEN_URL",
        "url with credentials",
        r"\b(?:https?|ftp)://(?:[^\s/@:]+:[^\s/@]+@[^\s<>\"']+"
        r"|[^\s<>\"'?#]+[?#][^\s<>\"']*?\b[\w.-]*(?:token|key|secret|sig|signature|auth|password|passwd|pwd|session|code|jwt)"
        r"[\w.-]*=[^\s<>\"']*)",
        0.9,
        _CASE_FREE,
    ),
    (
        "STREET_ADDRESS",
        "street address",
        rf"\b\d{{1,6}}[a-z]?(?:\s+|,\s*)(?:[a-z][\w'.-]*\s+){{0,4}}(?:{_SUFFIX})\b\.?"
        r"(?:,?\s+(?:apt|apartment|unit|suite|ste|flat|#)\.?\s*[\w-]+)?",
        0.7,
        _CASE_FREE,
    ),
    (
        "STREET_ADDRESS",
        "street address (name first)",
        rf"\b(?:{_FOREIGN_PREFIX})\s+(?:[\w'.-]+\s+){{0,5}}?\d{{1,5}}[a-z]?\b",
        0.7,
        _CASE_FREE,
    ),
    (
        "STREET_ADDRESS",
        "street address (suffix word)",
        rf"\b[\w-]+(?:{_FOREIGN_SUFFIX})\s+\d{{1,5}}[a-z]?\b",
        0.7,
        _CASE_FREE,
    ),
    (
        "STREET_ADDRESS",
        "street address (name, number)",
        rf"\b(?:[A-Z][\w'.-]*\s+){{1,4}}(?:{_SUFFIX.title()}|{_SUFFIX})\b\.?,?\s+\d{{1,5}}[a-z]?\b",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "PERSON",
        "self-introduction",
        r"(?<=\b(?i:my name is|my name's|call me|this is|i am called|signed,?)\s+)"
        r"[A-Z][a-z'’-]+(?:\s+[A-Z][a-z'’-]+){0,2}",
        0.7,
        _CASE_SENSITIVE,
    ),
    (
        "AGE",
        "age",
        r"\b\d{1,3}\s*(?:-|\s)?\s*(?:years?|yrs?|y/?o)(?:[\s-]+old)?\b|\b(?:aged?|age of|age:)\s*\d{1,3}\b",
        0.7,
        _CASE_FREE,
    ),
    (
        "DATE_OF_BIRTH",
        "date of birth",
        rf"(?<=\b(?:born(?:\s+on)?|dob:?|date of birth:?|d\.o\.b\.?:?|birthday(?:\s+is)?:?)\s+){_DATE}",
        0.85,
        _CASE_FREE,
    ),
    (
        "ZIP_CODE",
        "zip code",
        r"(?<=\b[A-Z]{2}\s)\d{5}(?:-\d{4})?\b|\b\d{5}(?:-\d{4})?(?=\s+[A-Z][a-z]+)|(?<=,\s)\d{5}(?:-\d{4})?\b",
        0.5,
        _CASE_SENSITIVE,
    ),
    ("TITLE", "title", r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lord|Lady|Rev)\.?(?=\s+[A-Z])", 0.6, _CASE_SENSITIVE),
]


def chat_recognizers() -> list[Any]:
    """Presidio `PatternRecognizer`s for the entities above."""
    from presidio_analyzer import Pattern, PatternRecognizer

    by_entity: dict[tuple[str, int], list[Any]] = {}
    for entity, name, regex, score, flags in _PATTERNS:
        by_entity.setdefault((entity, flags), []).append(Pattern(name=name, regex=regex, score=score))
    out = []
    for (entity, flags), patterns in by_entity.items():
        out.append(
            PatternRecognizer(
                supported_entity=entity,
                patterns=patterns,
                name=f"Companion{entity.title().replace('_', '')}Recognizer{'Ci' if flags & re.IGNORECASE else ''}",
                global_regex_flags=flags,
            )
        )
    return out


@functools.lru_cache(maxsize=1)
def _offline_extractor() -> Any:
    """tldextract with its bundled public suffix list only (no download attempt, no cache dir)."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def OfflineEmailRecognizer() -> Any:
    """Presidio's EmailRecognizer, validating the domain against the bundled suffix list
    (the stock one tries to download the list first, and logs a traceback offline)."""
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class _Offline(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return bool(_offline_extractor()(pattern_text).fqdn)

    return _Offline()
