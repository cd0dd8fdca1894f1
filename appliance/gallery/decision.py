"""The decision rule: accept a match only when it is close, clear of the runner-up, and allowed."""

import datetime
from dataclasses import dataclass
from typing import Optional

from appliance.config import MatchingConfig
from appliance.gallery.index import Match


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str  # "match", or why not
    match: Match


def decide(match: Match, rules: MatchingConfig,
           when: Optional[datetime.datetime] = None) -> Decision:
    if match.person is None:
        return Decision(False, "gallery is empty", match)
    if match.distance > rules.distance_threshold:
        return Decision(False, "unknown: distance %.3f above threshold %.3f"
                        % (match.distance, rules.distance_threshold), match)
    if match.margin < rules.min_margin:
        return Decision(False, "ambiguous: %s and %s within margin %.3f"
                        % (match.person.name, match.second.name if match.second else "?",
                           match.margin), match)
    if not match.person.enabled:
        return Decision(False, "%s is disabled" % match.person.name, match)
    when = when or datetime.datetime.now(datetime.timezone.utc)
    if not match.person.valid_at(when):
        return Decision(False, "%s is outside their validity dates" % match.person.name, match)
    return Decision(True, "match", match)
