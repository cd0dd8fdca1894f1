"""Weekly periods in local time: when the door stays unlocked (always-open), and the access
groups' schedules (door/access_rules.py).

Written as "mon-fri 08:00-09:00; sat 10:00-12:00"; a period may name one day, a range of days
(wrapping over the week end, e.g. "sat-sun") or "daily". A period ends before its end minute.
"""

import datetime
from typing import List, NamedTuple

from appliance.errors import ConfigError

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Period(NamedTuple):
    days: frozenset  # weekday numbers, Monday 0
    start: int  # minutes after midnight
    end: int


def _minutes(text: str, entry: str, what: str) -> int:
    try:
        hours, minutes = text.split(":")
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        raise ConfigError("%s: bad time %r in %r (use HH:MM)" % (what, text, entry)) from None
    if not 0 <= value <= 24 * 60 or int(minutes) >= 60:
        raise ConfigError("%s: time %r out of range in %r" % (what, text, entry))
    return value


def _days(text: str, entry: str, what: str) -> frozenset:
    if text == "daily":
        return frozenset(range(7))
    first, _, last = text.partition("-")
    if first not in DAYS or (last and last not in DAYS):
        raise ConfigError("%s: bad days %r in %r (use mon..sun, a range such as "
                          "mon-fri, or daily)" % (what, text, entry))
    start, stop = DAYS.index(first), DAYS.index(last or first)
    return frozenset((start + i) % 7 for i in range((stop - start) % 7 + 1))


def parse_schedule(text: str, what: str = "door.always_open") -> List[Period]:
    periods = []
    for entry in (part.strip().lower() for part in text.split(";")):
        if not entry:
            continue
        try:
            days, hours = entry.split()
            start, end = hours.split("-")
        except ValueError:
            raise ConfigError("%s: cannot read %r (expected e.g. 'mon-fri 08:00-09:00')"
                              % (what, entry)) from None
        period = Period(_days(days, entry, what), _minutes(start, entry, what), _minutes(end, entry, what))
        if period.end <= period.start:
            raise ConfigError("%s: %r ends before it starts" % (what, entry))
        periods.append(period)
    return periods


def is_open(periods: List[Period], when: datetime.datetime) -> bool:
    minute = when.hour * 60 + when.minute
    return any(when.weekday() in p.days and p.start <= minute < p.end for p in periods)
