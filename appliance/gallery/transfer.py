"""Whole-gallery export and import as one versioned JSON file, and re-embedding."""

import base64
import json
import os
from pathlib import Path
from typing import List, Tuple

import numpy as np

from appliance.errors import GalleryError, ImageError
from appliance.gallery.store import GalleryStore, Template
from appliance.vision import images

FORMAT = "facegate-gallery"
FORMAT_VERSION = 1


def export_gallery(store: GalleryStore, path: Path) -> dict:
    people = []
    for person in store.people():
        rows = store.templates_of(person.id)
        people.append({
            "id": person.id, "name": person.name, "note": person.note, "enabled": person.enabled,
            "valid_from": person.valid_from, "valid_until": person.valid_until,
            "card": "%d:%d" % person.card if person.card else None,
            "templates": [{"embedding": base64.b64encode(r[0]).decode(), "quality": r[1],
                           "source": r[2], "crop": base64.b64encode(r[3]).decode() if r[3] else None}
                          for r in rows]})
    document = {"format": FORMAT, "version": FORMAT_VERSION, "model_id": store.model_id,
                "gallery_version": store.version, "people": people}
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return {"people": len(people), "templates": sum(len(p["templates"]) for p in people)}


def import_gallery(store: GalleryStore, path: Path) -> Tuple[int, List[str]]:
    """Add the file's people that the gallery lacks; returns (added, names skipped as present)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise GalleryError("cannot read gallery export %s: %s" % (path, err)) from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise GalleryError("%s is not a FaceGate gallery export" % path)
    if document.get("version") != FORMAT_VERSION:
        raise GalleryError("%s is export format version %s; this FaceGate reads version %d"
                           % (path, document.get("version"), FORMAT_VERSION))
    model_id = document.get("model_id")
    if store.model_id and model_id != store.model_id:
        raise GalleryError("%s holds embeddings of model %s, this gallery uses %s"
                           % (path, model_id, store.model_id))
    present = {key for p in store.people() for key in (p.id, p.name)}
    cards = _cards_to_import(store, document.get("people", []), present)
    added, skipped = 0, []
    for entry in document.get("people", []):
        if entry["id"] in present or entry["name"] in present:
            skipped.append(entry["name"])
            continue
        templates = [Template(np.frombuffer(base64.b64decode(t["embedding"]), dtype=np.float32),
                              t.get("quality") or 0.0, t.get("source") or "",
                              base64.b64decode(t["crop"]) if t.get("crop") else None)
                     for t in entry["templates"]]
        store.enrol(entry["name"], templates, model_id, note=entry.get("note") or "",
                    person_id=entry["id"], valid_from=entry.get("valid_from"),
                    valid_until=entry.get("valid_until"))
        if not entry.get("enabled", True):
            store.set_enabled(entry["id"], False)
        if entry["id"] in cards:
            store.set_card(entry["id"], cards[entry["id"]][1], cards[entry["id"]][0])
        added += 1
    return added, skipped


def _cards_to_import(store: GalleryStore, entries, present) -> dict:
    """person id -> (facility, number) for the people to be added; a card someone here holds
    already refuses the import before anything is added."""
    from appliance.errors import FaceGateError
    from appliance.panel.cards import parse_card

    held = {p.card: p.name for p in store.people() if p.card}
    cards = {}
    for entry in entries:
        if not entry.get("card") or entry["id"] in present or entry["name"] in present:
            continue
        try:
            card = parse_card(entry["card"])
        except FaceGateError as err:
            raise GalleryError("%s in the export: %s" % (entry["name"], err)) from None
        if card in held:
            raise GalleryError("%s's card %s belongs to %s in this gallery: nothing imported; take it from one of "
                               "them first" % (entry["name"], entry["card"], held[card]))
        cards[entry["id"]] = card
    return cards


def reembed(store: GalleryStore, embedder) -> int:
    """Recompute every template from its kept crop with `embedder`'s model."""
    rows = store.templates_with_crops()
    missing = [template_id for template_id, crop in rows if not crop]
    if missing:
        raise GalleryError("%d templates have no kept face crop (gallery.keep_crops was off); "
                           "re-enrol those people instead" % len(missing))
    vectors = []
    for template_id, crop in rows:
        try:  # checked from its header like every image: an imported gallery is outside input
            aligned = images.decode(crop, "template %d's kept crop" % template_id, max_side=1024, quiet=False)
        except ImageError as err:
            raise GalleryError("%s; re-enrol that person" % err) from None
        vectors.append((template_id, embedder.embed(aligned)))
    store.replace_embeddings(vectors, embedder.model_id)
    return len(vectors)
