"""The site's gallery: the administrator's source of truth, with every change numbered.

It is a FaceGate gallery (the same people and templates tables, embeddings made here so photos
are checked before they go out) plus a `changes` table: change N is the signed body that took
the site from version N-1 to N. A door that missed changes asks for those after its version.
"""

import datetime
import json
from typing import Any, Dict, List, Optional, Tuple

from appliance.errors import GalleryError
from appliance.gallery.store import GalleryStore


class SiteGallery:
    def __init__(self, path: str, model_id: Optional[str] = None) -> None:
        self.store = GalleryStore(path, model_id=model_id, max_templates=100)
        self.store.db["changes"].create({"change": int, "verb": str, "body": str, "created": str},
                                        pk="change", if_not_exists=True)

    @property
    def version(self) -> int:
        row = self.store.db.execute("SELECT MAX(change) FROM changes").fetchone()
        return int(row[0] or 0)

    def record(self, verb: str, body: Dict[str, Any]) -> int:
        """Append a change; its number goes into the body the doors receive."""
        with self.store._transaction():
            number = self.version + 1
            body = dict(body, change=number)
            self.store.db["changes"].insert({"change": number, "verb": verb,
                                             "body": json.dumps(body, ensure_ascii=False),
                                             "created": datetime.datetime.now(datetime.timezone.utc)
                                             .isoformat(timespec="seconds")})
        return number

    def body_of(self, number: int) -> Tuple[str, Dict[str, Any]]:
        row = self.store.db.execute("SELECT verb, body FROM changes WHERE change = ?", [number]).fetchone()
        if row is None:
            raise GalleryError("no site change %d" % number)
        return row[0], json.loads(row[1])

    def changes_after(self, after: int, max_bytes: int = 1 << 20) -> List[Dict[str, Any]]:
        """Changes after `after`, in order, as many as fit in `max_bytes` of JSON (at least one)."""
        changes, size = [], 0
        for number, verb, body in self.store.db.execute(
                "SELECT change, verb, body FROM changes WHERE change > ? ORDER BY change", [after]):
            size += len(body) + 64
            if changes and size > max_bytes:
                break
            changes.append({"change": number, "verb": verb, "body": json.loads(body)})
        return changes

    def close(self) -> None:
        self.store.close()
