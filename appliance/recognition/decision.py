"""The decision rule: accept a match only when it is close, clear of the runner-up, and allowed.

How close is close follows from the risk the site accepts (`matching.false_accept_target`, per
stranger attempt) and the embedder's calibration (recognition/calibration.py), for the gallery as
it is: with more people a stranger has more chances, so the threshold tightens. An explicit
`matching.distance_threshold` overrides it, and is reported when it is looser than the target
allows. The target is per visit (recognition/visits.py): an attempt fuses `fuse_frames` frames
and takes at most `deny_frames` good ones, so it counts as ceil(deny_frames / fuse_frames)
independent looks at the gallery, and a visit is at most `attempts_per_visit` attempts before
the face is locked out: looks per visit = attempts_per_visit x looks per attempt (6 by default).
"""

import datetime
import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from appliance.config import Config, MatchingConfig
from appliance.errors import ConfigError
from appliance.recognition import calibration
from appliance.gallery.index import Match

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str  # "match", or why not
    match: Match


@dataclass(frozen=True)
class Threshold:
    value: float  # the distance the door accepts up to
    from_target: Optional[float]  # what the false-accept target allows here (None: no calibration)
    people: int
    templates: int
    source: str  # "target" or "override"

    @property
    def looser_than_target(self) -> bool:
        return self.from_target is not None and self.value > self.from_target + 1e-9

    def describe(self) -> str:
        text = "threshold %.3f for %d %s, %d template%s" % (self.value, self.people,
                                                            "person" if self.people == 1 else "people",
                                                            self.templates, "" if self.templates == 1 else "s")
        if self.source == "override":
            text += " (matching.distance_threshold"
            if self.looser_than_target:
                text += "; LOOSER than the %.3f the false-accept target allows" % self.from_target
            return text + ")"
        return text + " (from the false-accept target)"

    def as_dict(self) -> dict:
        return {"distance_threshold": round(self.value, 4), "source": self.source,
                "from_target": None if self.from_target is None else round(self.from_target, 4),
                "people": self.people, "templates": self.templates,
                "looser_than_target": self.looser_than_target}


@functools.lru_cache(maxsize=8)
def _calibration(model_id: str) -> Optional[calibration.Calibration]:
    return calibration.load(model_id)


@functools.lru_cache(maxsize=64)
def _from_target(model_id: str, target: float, looks: int, template_counts: tuple) -> Optional[float]:
    """What the target allows for this gallery; cached, as callers ask once per frame."""
    calibrated = _calibration(model_id)
    if calibrated is None:
        return None
    return calibrated.threshold(target, list(template_counts), looks)


def looks_per_attempt(config: Config) -> int:
    rules = config.verification
    return max(1, math.ceil(rules.deny_frames / rules.fuse_frames))


def looks_per_visit(config: Config) -> int:
    """What the false-accept target is spread over: every look of every attempt a visit allows."""
    return looks_per_attempt(config) * config.verification.attempts_per_visit


def threshold_for(config: Config, model_id: str, template_counts: Sequence[int]) -> Threshold:
    """The door's threshold for a gallery whose people hold `template_counts` templates."""
    matching = config.matching
    from_target = _from_target(model_id, matching.false_accept_target, looks_per_visit(config),
                               tuple(sorted(template_counts)))
    people, templates = len(template_counts), int(sum(template_counts))
    if matching.distance_threshold > 0:
        return Threshold(matching.distance_threshold, from_target, people, templates, "override")
    if from_target is None:
        raise ConfigError("embedder %s has no calibration, so no threshold follows from "
                          "matching.false_accept_target: set matching.distance_threshold (measure it with "
                          "'facegate tune'), or calibrate it with 'facegate eval-calibrate'" % model_id)
    return Threshold(from_target, from_target, people, templates, "target")


def looseness(config: Config, model_id: str, template_counts: Sequence[int], value: float) -> Optional[str]:
    """Why `value` is looser than the false-accept target allows for this gallery, with what it
    would let in; None when it is not (or no calibration can say)."""
    template_counts = [k for k in template_counts if k > 0] or [1]  # an empty gallery: its first person
    looks = looks_per_visit(config)
    target = config.matching.false_accept_target
    from_target = _from_target(model_id, target, looks, tuple(sorted(template_counts)))
    if from_target is None or value <= from_target + 1e-9:
        return None
    rate = _calibration(model_id).false_accept(value, list(template_counts), looks)
    people = len(template_counts)
    return ("threshold %.3f is looser than the %.3f that the false-accept target (%.0e per visit) allows for %d "
            "%s: it would accept about %s of strangers' visits as somebody (%s)"
            % (value, from_target, target, people, "person" if people == 1 else "people",
               "1 in %.0f" % (1 / rate) if rate < 0.5 else "%.0f%%" % (100 * rate),
               "everyone" if rate >= 0.999 else "%.1e per visit" % rate))


def decide(match: Match, threshold: float, rules: MatchingConfig,
           when: Optional[datetime.datetime] = None,
           access: Optional[Callable[[Match], Optional[str]]] = None) -> Decision:
    """`access(match)` says why the matched person may not use this door now (None: they may)."""
    if match.person is None:
        return Decision(False, "gallery is empty", match)
    if match.distance > threshold:
        return Decision(False, "unknown: distance %.3f above threshold %.3f" % (match.distance, threshold), match)
    if match.margin < rules.min_margin:
        return Decision(False, "ambiguous: %s and %s within margin %.3f"
                        % (match.person.name, match.second.name if match.second else "?",
                           match.margin), match)
    if not match.person.enabled:
        return Decision(False, "%s is disabled" % match.person.name, match)
    when = when or datetime.datetime.now(datetime.timezone.utc)
    if not match.person.valid_at(when):
        return Decision(False, "%s is outside their validity dates" % match.person.name, match)
    refusal = access(match) if access is not None else None
    if refusal:
        return Decision(False, "%s: %s" % (match.person.name, refusal), match)
    return Decision(True, "match", match)
