"""Who may use which door when: named weekly schedules with holidays, access groups (a set of
doors and a schedule), and each person's groups.

A person in no group may use every door at any time, as before groups existed; a person in one
or more groups only through a group that names this door and whose schedule is open now, in
the site's time zone (`door.time_zone`). Schedules are written as `door.always_open` is
("mon-fri 08:00-18:00; sat 09:00-12:00"); "always" is the schedule that never closes.
"""

import datetime
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional, Tuple

from appliance.door.schedule import Period, is_open, parse_schedule
from appliance.errors import ConfigError

ALWAYS = "always"
ALL_DOORS = "*"


@dataclass(frozen=True)
class Schedule:
    name: str
    periods: Tuple[Period, ...]
    holidays: FrozenSet[datetime.date] = frozenset()

    def open_at(self, local: datetime.datetime) -> bool:
        return local.date() not in self.holidays and is_open(list(self.periods), local)


@dataclass(frozen=True)
class Group:
    name: str
    doors: FrozenSet[str]  # door names, or {"*"} for every door of the site
    schedule: str

    def includes(self, door: str) -> bool:
        return ALL_DOORS in self.doors or door in self.doors


@dataclass(frozen=True)
class AccessRules:
    schedules: Dict[str, Schedule] = field(default_factory=dict)
    groups: Dict[str, Group] = field(default_factory=dict)

    def refusal(self, person_groups: Tuple[str, ...], door: str, local: datetime.datetime) -> Optional[str]:
        """Why a person in `person_groups` may not use `door` at `local` time; None if they may."""
        if not person_groups:
            return None
        here = [self.groups[g] for g in person_groups if g in self.groups and self.groups[g].includes(door)]
        if not here:
            return "not in an access group for door '%s' (groups: %s)" % (door, ", ".join(person_groups))
        closed = []
        for group in here:
            if group.schedule == ALWAYS:
                return None
            schedule = self.schedules.get(group.schedule)
            if schedule is not None and schedule.open_at(local):
                return None
            closed.append(group.schedule)
        return "outside schedule %s" % " and ".join("'%s'" % name for name in sorted(set(closed)))


def schedule_from_text(name: str, periods: str, holidays: str = "") -> Schedule:
    """A schedule from its stored or typed form; ConfigError saying what is wrong."""
    if not name or name == ALWAYS:
        raise ConfigError("a schedule needs a name other than %r (that one is built in)" % ALWAYS)
    parsed = parse_schedule(periods, what="schedule %r" % name)
    if not parsed:
        raise ConfigError("schedule %r has no periods (e.g. 'mon-fri 08:00-18:00')" % name)
    days = set()
    for text in (part.strip() for part in holidays.replace(";", ",").split(",")):
        if not text:
            continue
        try:
            days.add(datetime.date.fromisoformat(text))
        except ValueError:
            raise ConfigError("schedule %r: holiday %r is not a date like 2026-12-25" % (name, text)) from None
    return Schedule(name, tuple(parsed), frozenset(days))


def doors_from_text(text: str) -> FrozenSet[str]:
    doors = frozenset(d.strip() for d in text.split(",") if d.strip())
    if not doors:
        raise ConfigError("an access group needs its doors: names separated by commas, or * for every door")
    return doors


def local_now(time_zone: str) -> datetime.datetime:
    """Now in the site's time zone (`door.time_zone`; empty: this machine's)."""
    if not time_zone:
        return datetime.datetime.now().astimezone()
    return datetime.datetime.now(zone(time_zone))


def zone(name: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("door.time_zone %r is not a time zone this system knows (like Europe/Berlin; the "
                          "tzdata package provides them)" % name) from None
