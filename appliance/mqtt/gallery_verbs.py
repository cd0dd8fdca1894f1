"""The door's gallery commands over MQTT: each checks its body, then calls gallery/commands.py.

enroll (the site's version of a person, replacing whatever that id held), add_photos, remove,
disable, enable, list, get. Photos are checked from their headers, decoded and held to the
enrolment quality limits; embeddings are accepted only from this door's own model.
"""

from typing import Any, Callable, Dict, List, Optional

import numpy as np

from appliance.config import MqttConfig
from appliance.errors import CommandError, FaceGateError
from appliance.gallery import commands
from appliance.gallery.store import GalleryStore, Template
from appliance.mqtt.payload import decode_photo, text_field, whole_number
from appliance.vision.embedder import normalise


class GalleryVerbs:
    def __init__(self, store: GalleryStore, model_id: str, mqtt: MqttConfig,
                 template_maker: Optional[Callable[[np.ndarray, str], Template]] = None) -> None:
        self.store = store
        self.model_id = model_id
        self.mqtt = mqtt
        self.template_maker = template_maker  # photo (BGR) -> Template, with this door's models

    def handlers(self, missing_ok: Callable[[Dict[str, Any]], bool]) -> Dict[str, Callable]:
        """verb -> handler(body); `missing_ok(body)` says when removing someone absent is fine."""
        return {"enroll": self.enroll, "add_photos": self.add_photos,
                "remove": lambda body: self.remove(body, missing_ok(body)),
                "disable": lambda body: self.set_enabled(body, False),
                "enable": lambda body: self.set_enabled(body, True),
                "list": self.list, "get": self.get,
                **{verb: (lambda body, verb=verb: self.access(verb, body, missing_ok(body)))
                   for verb in commands.ACCESS_VERBS}}

    def access(self, verb: str, body, missing_ok: bool) -> Dict[str, Any]:
        fields: Dict[str, Any] = {}
        if verb == "person_groups":
            fields["person_id"] = text_field(body, "person_id")
            groups = body.get("groups")
            if not isinstance(groups, list) or len(groups) > 50:
                raise CommandError("malformed", "groups must be a list of at most 50 group names")
            fields["groups"] = [text_field({"group": g}, "group") for g in groups]
        elif verb == "person_card":
            fields["person_id"] = text_field(body, "person_id")
            fields["card"] = text_field(body, "card", False)  # absent or null: the card is taken away
        else:
            fields["name"] = text_field(body, "name")
            for key in {"schedule_set": ("periods", "holidays"), "group_set": ("doors", "schedule")}.get(verb, ()):
                # no holidays is an empty text
                fields[key] = text_field(body, key) if key != "holidays" or body.get(key) else ""
        try:
            return commands.access_change(self.store, verb, fields, missing_ok)
        except commands.NotEnrolled as err:
            raise CommandError("not_found", str(err)) from err

    def enroll(self, body) -> Dict[str, Any]:
        person_id, name = text_field(body, "person_id"), text_field(body, "name")
        note = body.get("note") or ""
        if not isinstance(note, str):
            raise CommandError("malformed", "note must be a string")
        valid_from, valid_until = text_field(body, "valid_from", False), text_field(body, "valid_until", False)
        card = text_field(body, "card", False)  # the person's access card (FACILITY:NUMBER), with them
        person = commands.enrol(self.store, person_id, name, self.templates(body), self.model_id, note=note,
                                valid_from=valid_from, valid_until=valid_until, card=card)
        return commands.summary(person)

    def add_photos(self, body) -> Dict[str, Any]:
        key = text_field(body, "person_id")
        self._known(key)
        return commands.summary(commands.add(self.store, key, self.templates(body), self.model_id))

    def remove(self, body, missing_ok: bool) -> Dict[str, Any]:
        key = text_field(body, "person_id")  # an id, or a name as `admin remove NAME --door D` sends
        try:
            person = commands.remove(self.store, key, missing_ok)
        except commands.NotEnrolled as err:
            raise CommandError("not_found", str(err)) from err
        if person is None:
            return {"person_id": key, "removed": False, "note": "not enrolled here"}
        return dict(commands.summary(person), removed=True)

    def set_enabled(self, body, enabled: bool) -> Dict[str, Any]:
        key = text_field(body, "person_id")
        self._known(key)
        return commands.summary(commands.set_enabled(self.store, key, enabled))

    def list(self, body) -> Dict[str, Any]:
        number = whole_number(body, "page", 1, 1, 10 ** 6)
        size = whole_number(body, "page_size", 50, 1, 500)
        return commands.page(self.store, number, size)

    def get(self, body) -> Dict[str, Any]:
        return commands.summary(self._known(text_field(body, "person_id")))

    def _known(self, key: str):
        try:
            return commands.get(self.store, key)
        except commands.NotEnrolled as err:
            raise CommandError("not_found", str(err)) from err

    def templates(self, body) -> List[Template]:
        photos, embeddings = body.get("photos") or [], body.get("embeddings") or []
        if not isinstance(photos, list) or not isinstance(embeddings, list):
            raise CommandError("malformed", "photos and embeddings must be lists")
        if len(photos) + len(embeddings) > self.mqtt.max_photos:
            raise CommandError("too_large", "at most %d photos or embeddings in one command" % self.mqtt.max_photos)
        if embeddings and body.get("model_id") == self.model_id:
            return [Template(_unit_vector(v), 1.0, "mqtt embedding") for v in embeddings]
        if not photos:
            raise CommandError("refused", "no photos, and no embeddings of this door's model %s" % self.model_id)
        if self.template_maker is None:
            raise CommandError("refused", "this door cannot embed photos (no models loaded)")
        images = [decode_photo(p, self.mqtt.max_image_side, self.mqtt.max_payload_kb * 1024) for p in photos]
        templates, reasons = [], []
        for number, image in enumerate(images, 1):
            try:
                templates.append(self.template_maker(image, "mqtt photo %d" % number))
            except FaceGateError as err:
                reasons.append("photo %d: %s" % (number, err))
        if not templates:
            raise CommandError("refused", "no usable photo: %s" % "; ".join(reasons))
        return templates


def _unit_vector(values) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or vector.size < 32 or not np.all(np.isfinite(vector)):
        raise CommandError("malformed", "an embedding must be a list of finite numbers")
    if float(np.linalg.norm(vector)) < 1e-6:
        raise CommandError("malformed", "an embedding must not be all zeros")
    return normalise(vector[None, :])[0]

