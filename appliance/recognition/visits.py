"""A visit: every attempt one face makes while it keeps coming back, and the lockout that ends it.

The false-accept target is a promise per visit, not per attempt: a stranger who is denied can
step out of view and back, or stand there while the tracker restarts, and every new attempt
is another look at the gallery. So the door remembers the faces of attempts that ended without
a grant (denied, or abandoned when the face left or someone else took the place) for
`verification.visit_seconds` after each one. A face whose embedding comes within
`identity_change_distance` of a remembered one continues that visit; after
`attempts_per_visit` attempts it is locked out: denied at once, without a search, until
`visit_seconds` pass without it trying again. The decision rule counts those attempts, so the
threshold bounds what one visit can get.

Memory is bounded (`MAX_FACES`): a crowd of strangers cannot grow it, and the oldest visit is
forgotten first, which only gives that face a fresh visit when it returns.
"""

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

MAX_FACES = 256


@dataclass(eq=False)  # one face's visit is itself alone (and arrays do not compare as one truth value)
class Visit:
    identity: np.ndarray  # the face's embedding at its latest attempt
    attempts: int  # attempts that ended without a grant
    last: float  # capture time of the latest attempt's end


class Visits:
    def __init__(self, attempts_per_visit: int, visit_seconds: float, same_face_distance: float) -> None:
        self.attempts_per_visit = attempts_per_visit
        self.visit_seconds = visit_seconds
        self.same_face_distance = same_face_distance
        self._visits: List[Visit] = []

    def __len__(self) -> int:
        return len(self._visits)

    def _forget_old(self, now: float) -> None:
        self._visits = [v for v in self._visits if now - v.last <= self.visit_seconds]

    def find(self, embedding: np.ndarray, now: float) -> Optional[Visit]:
        """The visit this face continues, or None for a face not seen lately."""
        self._forget_old(now)
        if not self._visits:
            return None
        distances = 1.0 - np.stack([v.identity for v in self._visits]) @ np.asarray(embedding, np.float32)
        nearest = int(np.argmin(distances))
        return self._visits[nearest] if distances[nearest] <= self.same_face_distance else None

    def locked(self, visit: Optional[Visit]) -> bool:
        return visit is not None and visit.attempts >= self.attempts_per_visit

    def ended_without_grant(self, identity: np.ndarray, now: float) -> Visit:
        """Count an attempt of this face that was denied or abandoned; returns its visit."""
        visit = self.find(identity, now)
        if visit is None:
            if len(self._visits) >= MAX_FACES:
                self._visits.remove(min(self._visits, key=lambda v: v.last))
            visit = Visit(np.asarray(identity, np.float32), 0, now)
            self._visits.append(visit)
        visit.attempts += 1
        visit.identity = np.asarray(identity, np.float32)
        visit.last = now
        return visit

    def granted(self, identity: np.ndarray, now: float) -> None:
        """A grant ends the visit of that face: its earlier denials no longer count."""
        visit = self.find(identity, now)
        if visit is not None:
            self._visits.remove(visit)
