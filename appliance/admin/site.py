"""The site's gallery: the administrator's source of truth, with every change numbered.

It is a FaceGate gallery (the same people and templates, embeddings made here so photos are
checked before they go out) whose store also keeps the numbered site changes: change N is the
signed body that took the site from N-1 to N. A door that missed changes asks for those after
its number. A change and its record are one transaction.
"""

from typing import Any, Callable, Dict, List, Optional, Tuple

from appliance.gallery.store import GalleryStore


class SiteGallery:
    def __init__(self, path: str, model_id: Optional[str] = None) -> None:
        self.store = GalleryStore(path, model_id=model_id, max_templates=100)

    @property
    def version(self) -> int:
        return self.store.last_change

    def record(self, verb: str, body: Dict[str, Any], apply: Optional[Callable[[], Any]] = None) -> int:
        """Apply a change to the site's people (`apply`, if given) and record it, whole or not at
        all; returns its number, which goes into the body the doors receive."""
        with self.store.transaction():
            if apply is not None:
                apply()
            return self.store.append_change(verb, body)

    def body_of(self, number: int) -> Tuple[str, Dict[str, Any]]:
        return self.store.change(number)

    def changes_after(self, after: int, max_bytes: int = 1 << 20) -> List[Dict[str, Any]]:
        return self.store.changes_after(after, max_bytes)

    def close(self) -> None:
        self.store.close()
