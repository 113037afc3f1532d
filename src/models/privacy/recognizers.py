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
    ZIP_CODE         a 5-digit (+4) code after a US state code or an address; any postal code after
                     "zip", "postcode", "PLZ", ...; UK and Canadian postcodes
    TITLE            Mr, Mrs, Ms, Dr, Prof, ... before a capitalised name
    PHONE_NUMBER     after a label ("Mobile:", "call me on"), international (+44 20 ...), with an
                     extension ("(555) 123-4567 ext. 89"): beside Presidio's phonenumbers-based one
    STREET_ADDRESS   also: what follows "lives at", "address:", "ship to", ... up to the sentence's
                     end; apartment, suite, unit and PO box numbers; street + city + state + zip as
                     one span
    LOCATION         a capitalised place after "I am in", "moved to", "born in", ...; countries
                     and US states by name (names that are also common words or first names are
                     left to NER)
    ORGANIZATION     names with a legal or trade suffix (Inc, LLC, Ltd, GmbH, Press, Studios, ...);
                     "University of X", "X College"

Discord's id and mention formats: https://discord.com/developers/docs/reference#snowflakes and
#message-formatting.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from models.privacy.places import PLACE_PATTERNS, US_STATES

__all__ = ["OfflineEmailRecognizer", "chat_recognizers"]

_SUFFIX = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way|terrace|"
    r"circle|cir|highway|hwy|parkway|pkwy|square|sq|close|crescent|cres|row|trail|trl|alley|"
    r"grove|gardens|gdns|hill|mews|walk|loop|path|pike|plaza|point|ridge|run|view"
)
_FOREIGN_PREFIX = r"rua|rue|via|viale|calle|carrer|avenida|av\.|avda\.|praça|largo|piazza|plaza|paseo|camino|travessa"
_FOREIGN_SUFFIX = (
    r"straße|strasse|str\.|weg|gasse|platz|allee|laan|straat|gracht|vej|gade|gatan|gata|katu|utca|ulica|"
    r"veien|vegen|vei|veg|stien|gate|bakken|torget|vägen|väg|tie|kuja"
)
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
        "self-introduction, lower case",
        r"(?<=\b(?i:my name is|my name's|everyone calls me|people call me|they call me)\s)"
        r"(?!(?:a|an|the|not|so|very|just|still|too|also|from|on|at|in|when|if|what|that|it)\b)"
        r"[a-zà-öø-ÿ][\w'’-]{2,}(?:\s(?!(?:but|and|or|so|from|because|though|although|who|and)\b)[a-zà-öø-ÿ][\w'’-]{2,})?",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "PERSON",
        "someone who lives, works or was born somewhere",
        r"\b[A-ZÀ-Þ][\w'’-]+(?:\s+[A-ZÀ-Þ]\.?)?(?:\s+[A-ZÀ-Þ][\w'’-]+){1,2}"
        r"(?=\s+(?:lives|lived|works|worked|was born|grew up|is from|stays|moved)\b)",
        0.55,
        _CASE_SENSITIVE,
    ),
    (
        "ORGANIZATION",
        "the X website, app or team",
        r"(?<=\bthe\s)(?!(?:The|This|That|Our|Your|My|Their|His|Her|Its|New|Old|Main|Official)\b)"
        r"[A-Z][\w&'’.-]+(?:\s+(?:[A-Z][\w&'’.-]+|and|&|of))*"
        r"(?=\s+(?:website|web site|site|app|homepage|headquarters|offices?|store|shop|staff|team|employees|"
        r"customers|CEO|board|press office|spokesperson)\b)",
        0.5,
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
    (
        "TITLE",
        "title",
        r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lord|Lady|Rev|Fr|Hon)\.?(?=\s+[A-Z])",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "PHONE_NUMBER",
        "labelled phone",
        r"(?<=\b(?i:phone|mobile|cell|tel|telephone|fax|desk|office|home|work|whatsapp|call me on|call me at|"
        r"ring me on|ring|text me at|text me on|reach me at|number is|number:|no\.?)\s{0,2}:?\s{0,2})"
        r"\+?\(?\d[\d\s().-]{5,18}\d(?:\s*(?:x|ext\.?|extension)\s*\d{1,5})?",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "PHONE_NUMBER",
        "international phone",
        r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(0?\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,5}){1,4}"
        r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,5})?(?![\w])",
        0.55,
        _CASE_FREE,
    ),
    (
        "PHONE_NUMBER",
        "phone extension",
        r"(?<![\w])\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}\s*(?:x|ext\.?|extension)\s*\d{1,5}\b",
        0.6,
        _CASE_FREE,
    ),
    (
        "STREET_ADDRESS",
        "address after a cue",
        r"(?<=\b(?i:lives at|live at|living at|lived at|address is|address:|located at|ship to|send it to|"
        r"mail it to|moved to|deliver to)\s)(?=[^\n]{0,10}\d)[^\n.!?;]{4,90}?(?=[.!?;]\s|[.!?;]?$|\n|\s[-–]\s|"
        r",\s+(?:I|I'm|I’m|we|he|she|they|it|and|but|so|which|who|where|born|aged?|since)\b|"
        r"\s+(?:and|but|since|because|where|with|for|until|from)\s)",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "STREET_ADDRESS",
        "unit or box",
        r"\b(?:apt|apartment|unit|suite|ste|flat|p\.?\s?o\.?\s?box|box)\.?\s*#?\s*\d{1,6}[a-z]?\b",
        0.55,
        _CASE_FREE,
    ),
    (
        "STREET_ADDRESS",
        "street with its city, state and zip",
        rf"\b\d{{1,6}}[a-z]?\s+(?:[A-Za-z][\w'.-]*\s+){{0,4}}(?:{_SUFFIX})\b\.?"
        r"(?:,?\s+(?:apt|apartment|unit|suite|ste|#)\.?\s*[\w-]+)?,?\s+[A-Z][\w'. -]{1,30},\s+(?:[A-Z]{2}|"
        + "|".join(US_STATES)
        + r")\s+\d{5}(?:-\d{4})?\b",
        0.75,
        _CASE_FREE,
    ),
    (
        "LOCATION",
        "place after a cue",
        r"(?<=\b(?:I am in|I'm in|I was in|we are in|live in|lives in|living in|lived in|moved to|from|visiting|"
        r"trip to|travel(?:l?ing)? to|flew to|based in|born in|grew up in|arrived in|stay(?:ing)? in) )"
        r"(?:[A-ZÀ-ÞΑ-ΩА-Я][\w'’.-]+)(?:\s+(?:[A-ZÀ-ÞΑ-ΩА-Я][\w'’.-]+|de|del|la|le|am|an|upon|on))*",
        0.45,
        _CASE_SENSITIVE,
    ),
    (
        "LOCATION",
        "country or state",
        r"\b(?:" + "|".join(PLACE_PATTERNS) + r")\b",
        0.5,
        _CASE_SENSITIVE,
    ),
    (
        "ORGANIZATION",
        "organisation with a legal suffix",
        r"\b(?:[A-Z][\w&'’.-]*,?\s+(?:(?:and|&|of|the)\s+)?){1,4}(?:Inc|Incorporated|LLC|L\.L\.C\.|Ltd|Limited|"
        r"Corp|Corporation|Company|Co|Group|Holdings|Partners|Associates|Foundation|Institute|Bank|Labs?|"
        r"Technologies|Solutions|Systems|Industries|Enterprises|Press|Publishing|Publishers|Media|Studios?|"
        r"Agency|PLC|plc|GmbH|AG|S\.?A\.?|S\.?L\.?|S\.?p\.?A\.?|B\.?V\.?|N\.?V\.?|LLP|SARL|SAS|KG|Oy|AB|ASA)\b\.?",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "ORGANIZATION",
        "university or school",
        r"\b(?:University|College|School|Academy|Museum|Library|Hospital) of (?:[A-Z][\w'’-]+\s?){1,4}"
        r"|\b(?:[A-Z][\w'’-]+\s){1,3}(?:University|College|Hospital|Museum|Library|Academy)\b",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "ZIP_CODE",
        "zip after a cue",
        r"(?<=\b(?i:zip|zip code|zipcode|postcode|post code|postal code|plz|cap|cp)\s{0,2}:?\s{0,2})"
        r"(?:\d{4,5}(?:-\d{3,4})?|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d|\d{3}\s?\d{2})\b",
        0.6,
        _CASE_SENSITIVE,
    ),
    (
        "ZIP_CODE",
        "UK or Canadian postcode",
        r"\b(?:[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}|[A-Z]\d[A-Z]\s\d[A-Z]\d)\b",
        0.5,
        _CASE_SENSITIVE,
    ),
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
