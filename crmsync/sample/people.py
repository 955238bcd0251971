"""One sample customer: a Turkish name, e-mail, phone, place, birthday and consent.

``make_person`` takes the random generator as an argument so the dirty-record maker can
draw extra people from its own stream without disturbing the clean store.
"""

from __future__ import annotations

import random
from bisect import bisect
from itertools import accumulate

from crmsync.records import Consent, ConsentState, Customer
from crmsync.sample.spec import Frame, birthday_from, utc
from crmsync.sample.vocab import CITIES, FEMALE_NAMES, LAST_NAMES, MALE_NAMES, ascii_fold

NO_CONSENT = Consent(ConsentState.NONE, None)
MOBILE_PREFIXES = (
    "501", "505", "506", "507", "530", "531", "532", "533", "534", "535", "536", "537",
    "538", "539", "541", "542", "543", "544", "545", "546", "547", "548", "549", "551",
    "552", "553", "554", "555", "559",
)  # fmt: skip
DOMAINS = ("example.com",) * 6 + ("example.org",) * 2 + ("example.net",) * 2
_CITY_CUM = tuple(accumulate(weight for _, weight, _ in CITIES))
_FOLDED = {name: ascii_fold(name) for name in (*FEMALE_NAMES, *MALE_NAMES, *LAST_NAMES)}
DAY = 86400


def fold(name: str) -> str:
    return _FOLDED.get(name) or ascii_fold(name)


def email_for(rng: random.Random, first: str, last: str, number: int) -> str:
    """An address derived from the name; ``number`` (unique per person) keeps it unique.

    Names contain no digits, so the trailing digits of every local part are exactly
    ``number`` and two people can never share an address by accident.
    """
    f, l = fold(first).replace(" ", ""), fold(last).replace(" ", "")  # noqa: E741
    pattern = rng.randrange(5)
    if pattern == 0:
        local = f"{f}.{l}{number}"
    elif pattern == 1:
        local = f"{f}{l}{number}"
    elif pattern == 2:
        local = f"{f[0]}.{l}{number}"
    elif pattern == 3:
        local = f"{f}_{l}{number}"
    else:
        local = f"{l}.{f}{number}"
    return f"{local}@{DOMAINS[rng.randrange(len(DOMAINS))]}"


def phone_for(rng: random.Random, number: int, seed: int) -> str:
    """An E.164 Turkish mobile number; the subscriber part is a bijection of ``number``."""
    subscriber = (number * 7_654_321 + seed * 1_234_567) % 10_000_000
    return f"+90{MOBILE_PREFIXES[rng.randrange(len(MOBILE_PREFIXES))]}{subscriber:07d}"


def consent(rng: random.Random, p_sub: float, p_unsub: float, created: int, now: int) -> Consent:
    roll = rng.random()
    if roll < p_sub:
        at = created + (
            rng.randrange(5, 120) if rng.random() < 0.6 else rng.randrange(now - created + 1)
        )
        return Consent(ConsentState.SUBSCRIBED, utc(min(at, now)))
    if roll < p_sub + p_unsub:
        return Consent(ConsentState.UNSUBSCRIBED, utc(created + rng.randrange(now - created + 1)))
    return NO_CONSENT


def make_person(
    rng: random.Random,
    frame: Frame,
    *,
    number: int,
    external_id: str,
    created: int,
    last_activity: int,
    seed: int,
) -> tuple[Customer, int]:
    """A customer and the style bits that decide how the export spells its values."""
    names = FEMALE_NAMES if rng.random() < 0.52 else MALE_NAMES
    first = names[rng.randrange(len(names))]
    last = LAST_NAMES[rng.randrange(len(LAST_NAMES))]
    city, _, districts = CITIES[bisect(_CITY_CUM, rng.random() * _CITY_CUM[-1])]
    district = districts[rng.randrange(len(districts))]
    email = None if rng.random() < 0.02 else email_for(rng, first, last, number)
    phone = phone_for(rng, number, seed) if rng.random() < (0.85 if email else 0.8) else None
    birthday = (
        birthday_from(frame.today, rng.randrange(18 * 365, 70 * 365))
        if rng.random() < 0.7
        else None
    )
    now = frame.now
    email_consent = consent(rng, 0.55, 0.15, created, now) if email else NO_CONSENT
    sms_consent = consent(rng, 0.30, 0.10, created, now) if phone else NO_CONSENT
    touched = max(
        created,
        last_activity,
        int(email_consent.at.timestamp()) if email_consent.at else 0,
        int(sms_consent.at.timestamp()) if sms_consent.at else 0,
    )
    updated = min(now, touched + rng.randrange(7200))
    deleted = rng.random() < 0.005
    if deleted:
        updated = max(updated, now - rng.randrange(14 * DAY))
    customer = Customer(
        external_id=external_id,
        email=email,
        phone=phone,
        first_name=first,
        last_name=last,
        city=city,
        region=district,
        country="TR",
        birthday=birthday,
        created_at=utc(created),
        updated_at=utc(updated),
        email_consent=email_consent,
        sms_consent=sms_consent,
        deleted=deleted,
    )
    return customer, rng.getrandbits(24)
