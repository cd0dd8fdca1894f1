"""In-memory 1:N index over all templates: one matrix product, best template per person.

The index is an immutable snapshot swapped in whole when the gallery changes, so a search in
progress keeps the snapshot it started with and never waits for a rebuild.
"""

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from appliance.door.access_rules import AccessRules
from appliance.gallery.store import GalleryStore, Person


@dataclass(frozen=True)
class Match:
    person: Optional[Person]  # best person, None for an empty gallery
    distance: float  # cosine distance to that person's closest template
    margin: float  # how much farther the second-best person is (inf with one person)
    second: Optional[Person] = None


@dataclass(frozen=True)
class _Snapshot:
    version: int
    people: List[Person]  # one per group of rows, in row order
    starts: np.ndarray  # first row of each person's group
    matrix: np.ndarray  # (templates, dims) float32, rows grouped by person
    access: AccessRules  # schedules and access groups, as of the same version


def _build(store: GalleryStore) -> _Snapshot:
    person_ids, matrix, version = store.matrix()
    by_id: Dict[str, Person] = {p.id: p for p in store.people()}
    access = store.access_rules()
    if not person_ids:
        return _Snapshot(version, [], np.zeros(0, np.int64), matrix, access)
    ids = np.asarray(person_ids)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    people = [by_id[person_ids[i]] for i in starts]
    return _Snapshot(version, people, starts, np.ascontiguousarray(matrix), access)


class GalleryIndex:
    def __init__(self, store: Optional[GalleryStore]) -> None:
        self.store = store
        self._snapshot = _build(store) if store is not None else _Snapshot(0, [], np.zeros(0, np.int64),
                                                                           np.zeros((0, 0), np.float32), AccessRules())
        self._rebuild_lock = threading.Lock()

    @classmethod
    def fixed(cls, people: List[Person], owners: np.ndarray, matrix: np.ndarray) -> "GalleryIndex":
        """An index over given templates that never changes (evaluations replay the door on it);
        `owners[i]` is the index in `people` of row i, rows grouped by person."""
        index = cls(None)
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        index._snapshot = _Snapshot(0, list(people), starts, np.ascontiguousarray(matrix, np.float32), AccessRules())
        return index

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def access(self) -> AccessRules:
        return self._snapshot.access

    def __len__(self) -> int:
        return int(self._snapshot.matrix.shape[0])

    def template_counts(self) -> List[int]:
        """Templates per person in the current snapshot: what the decision rule's threshold needs."""
        snapshot = self._snapshot
        if not snapshot.people:
            return []
        return np.diff(np.r_[snapshot.starts, snapshot.matrix.shape[0]]).astype(int).tolist()

    def refresh(self) -> bool:
        """Rebuild if the gallery changed since the snapshot; True when a new one was swapped in."""
        if self.store is None or self.store.version == self._snapshot.version:
            return False
        with self._rebuild_lock:  # only one rebuild at a time; searches never take this lock
            if self.store.version == self._snapshot.version:
                return False
            self._snapshot = _build(self.store)
        return True

    def search(self, vector: np.ndarray) -> Match:
        snapshot = self._snapshot  # one read: the rest of the search uses this snapshot
        if not snapshot.people:
            return Match(None, float("inf"), float("inf"))
        similarities = snapshot.matrix @ np.asarray(vector, dtype=np.float32)
        best_per_person = np.maximum.reduceat(similarities, snapshot.starts)
        if best_per_person.size == 1:
            return Match(snapshot.people[0], float(1.0 - best_per_person[0]), float("inf"))
        top_two = np.argpartition(-best_per_person, 1)[:2]
        first, second = sorted(top_two, key=lambda i: -best_per_person[i])
        distance = float(1.0 - best_per_person[first])
        return Match(snapshot.people[first], distance,
                     float(best_per_person[first] - best_per_person[second]),
                     snapshot.people[second])

    def holder_of(self, card) -> Optional[Person]:
        """The person whose card is (facility, number), or None."""
        return next((p for p in self._snapshot.people if p.card == tuple(card)), None)

    def search_person(self, vector: np.ndarray, person_id: str) -> Match:
        """1:1: how close `vector` comes to one person's templates (card + face)."""
        snapshot = self._snapshot
        for index, person in enumerate(snapshot.people):
            if person.id == person_id:
                end = snapshot.starts[index + 1] if index + 1 < len(snapshot.people) else snapshot.matrix.shape[0]
                similarity = float(np.max(snapshot.matrix[snapshot.starts[index]:end] @ np.asarray(vector, np.float32)))
                return Match(person, 1.0 - similarity, float("inf"))
        return Match(None, float("inf"), float("inf"))
