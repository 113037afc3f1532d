"""Our own labelled PII dev set (issue 22): writer's notes and chat lines filled with Faker values.

    docs = generate(400, seed=0)   # [{"full_text", "spans": [{"entity_type", "entity_value",
                                   #   "start_position", "end_position"}]}], presidio-research's shape

Ten locales (names, addresses, phone formats, IBANs and companies differ by country), many
date and phone formats (international, extensions), full postal addresses (street, city,
state, zip as one value) beside bare zip codes, titles, organisations with their suffixes.
Deterministic for a seed; nothing is read from disk.
"""

from __future__ import annotations

import random
import re
from typing import Any

LOCALES = ("en_US", "en_GB", "en_AU", "en_CA", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR")

# {slot} fills; the text around them reads like a writer's notes, chats and e-mails.
TEMPLATES = (
    "Note to self: call {person} on {phone} before {date} about chapter four.",
    "hey it's {first} again, my new number is {phone}, text me!",
    "Send the proofs to {email} and cc {person} ({email2}).",
    "{title} {last} lives at {address}. She keeps the lighthouse logs there.",
    "Character sketch: {person}, born {date}, grew up in {city}, works for {company}.",
    "Research trip: {city}, {country}. Contact at the archive: {person}, {phone}.",
    "Invoice for the cover art: pay {iban} (account holder {person}).",
    "My card {card} was declined when I bought the research books, ugh.",
    "For the grant form: SSN {ssn}, address {address}.",
    "Met {person} from {company} at the book fair in {city} on {date}.",
    "{first}: did you post the manuscript to {street}, {zip}?",
    "Reminder: {title} {last}'s interview is on {date}; her office line is {phone}.",
    "The publisher ({company}) wants the edits by {date}. Editor: {person} <{email}>.",
    "Mail me at {email} or ring {phone} — {first}",
    "Plot idea borrowed from a story my aunt {person} told me in {city}.",
    "Shipping label: {person}, {address}, {country}.",
    "Can you ask {first} {last} whether {company} still sponsors the reading on {date}?",
    "Bank details for the translator: {iban}, {person}, {city}.",
    "Agent's assistant {person} said to use the postcode {zip} for the courier.",
    "I wrote the first draft in a café in {city} while {first} was away.",
    "Emergency contact for the retreat: {person}, {phone}, {email}.",
    "Quote from {title} {last} of {company}: we will print 2,000 copies.",
    "{person} ({email}) asked to be thanked in the acknowledgements.",
    "The festival in {city} is on {date}; hotel booked under {person}.",
)

_DATE_FORMATS = ("%B %d, %Y", "%d %B %Y", "%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%A, %B %d", "%b %d %Y", "%d/%m/%y")


def _phone(fake: Any, rng: random.Random) -> str:
    phone = fake.phone_number()
    r = rng.random()
    if r < 0.15:
        phone = f"{phone} ext. {rng.randint(10, 9999)}"
    elif r < 0.3 and not phone.startswith("+"):
        phone = f"+{rng.choice([1, 44, 49, 33, 34, 39, 31, 55, 61])} {re.sub(r'^0', '', phone)}"
    return phone


def _values(fake: Any, locale: str, rng: random.Random) -> dict[str, tuple[str, str]]:
    """slot -> (entity type, value) for one document."""
    first, last = fake.first_name(), fake.last_name()
    address = fake.address().replace("\n", ", ")
    street = fake.street_address()
    zip_code = fake.postcode()
    card = fake.credit_card_number()
    ssn = (
        fake.ssn() if locale == "en_US" else f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
    )
    return {
        "person": ("PERSON", f"{fake.first_name()} {fake.last_name()}"),
        "first": ("PERSON", first),
        "last": ("PERSON", last),
        "title": ("TITLE", rng.choice(["Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "Mr", "Dr"])),
        "email": ("EMAIL_ADDRESS", fake.email()),
        "email2": ("EMAIL_ADDRESS", fake.free_email()),
        "phone": ("PHONE_NUMBER", _phone(fake, rng)),
        "date": ("DATE_TIME", fake.date_between("-60y", "+2y").strftime(rng.choice(_DATE_FORMATS))),
        "city": ("LOCATION", fake.city()),
        "country": ("LOCATION", fake.current_country() if rng.random() < 0.5 else fake.country()),
        "company": ("ORGANIZATION", fake.company()),
        "address": ("STREET_ADDRESS", address),
        "street": ("STREET_ADDRESS", street),
        "zip": ("ZIP_CODE", zip_code),
        "iban": ("IBAN_CODE", fake.iban()),
        "card": ("CREDIT_CARD", card),
        "ssn": ("US_SSN", ssn),
    }


def generate(n: int = 400, seed: int = 0) -> list[dict[str, Any]]:
    from faker import Faker

    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in LOCALES}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed * 1000 + i)
    docs = []
    for _ in range(n):
        locale = rng.choice(LOCALES)
        values = _values(fakers[locale], locale, rng)
        template = rng.choice(TEMPLATES)
        text, spans, pos = "", [], 0
        for m in re.finditer(r"\{(\w+)\}", template):
            text += template[pos : m.start()]
            entity, value = values[m.group(1)]
            spans.append(
                {"entity_type": entity, "entity_value": value, "start_position": len(text),
                 "end_position": len(text) + len(value)}
            )  # fmt: skip
            text += value
            pos = m.end()
        text += template[pos:]
        docs.append({"full_text": text, "spans": spans, "locale": locale})
    return docs
