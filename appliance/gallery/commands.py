"""Who may enter, changed and read in one place: the door's remote commands (mqtt/gallery_verbs.py),
the administrator's site gallery and the local CLI all call these.

Each change is one store transaction, checked before anything is written. A person is named by
id or exact name; an unknown one is `NotEnrolled`, with the close names. Templates are made
elsewhere (gallery/enrol.py, from photos at the enrolment quality limits) and arrive here ready.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

from appliance.errors import GalleryError
from appliance.gallery.store import GalleryStore, Person, Template


class NotEnrolled(GalleryError):
    """No such person in this gallery."""


# who may use which door when: each a change like an enrolment (numbered site-wide, synced, audited)
ACCESS_VERBS = ("schedule_set", "schedule_remove", "group_set", "group_remove", "person_groups", "person_card")


def summary(person: Person) -> Dict[str, Any]:
    """A person as the MQTT replies and `--json` outputs show them."""
    return {"person_id": person.id, "name": person.name, "enabled": person.enabled,
            "templates": person.templates, "valid_from": person.valid_from,
            "valid_until": person.valid_until, "note": person.note, "groups": list(person.groups),
            "card": "%d:%d" % person.card if person.card else None}


def access_change(store: GalleryStore, verb: str, fields: Dict[str, Any], missing_ok: bool = False) -> Dict[str, Any]:
    """One change to the access rules, from checked fields: name, periods, holidays (schedule_set);
    name (schedule_remove, group_remove); name, doors, schedule (group_set); person_id and groups
    (person_groups); person_id and card, "FACILITY:NUMBER" or None to take it (person_card). With `missing_ok` (a numbered site change) a person this gallery does not
    hold is no error."""
    if verb == "schedule_set":
        store.set_schedule(fields["name"], fields["periods"], fields.get("holidays") or "")
        return {"schedule": fields["name"]}
    if verb == "schedule_remove":
        store.remove_schedule(fields["name"])
        return {"schedule": fields["name"], "removed": True}
    if verb == "group_set":
        store.set_group(fields["name"], fields["doors"], fields["schedule"])
        return {"group": fields["name"]}
    if verb == "group_remove":
        store.remove_group(fields["name"])
        return {"group": fields["name"], "removed": True}
    if verb in ("person_groups", "person_card"):
        try:
            person = get(store, fields["person_id"])
        except NotEnrolled:
            if missing_ok:
                return {"person_id": fields["person_id"], "note": "not enrolled here"}
            raise
        if verb == "person_groups":
            return summary(store.set_person_groups(person.id, fields["groups"]))
        facility, number = checked_card(fields["card"]) or (0, None)
        return summary(store.set_card(person.id, number, facility))
    raise GalleryError("unknown access change %r" % verb)


def get(store: GalleryStore, key: str) -> Person:
    try:
        return store.find(key)
    except GalleryError as err:
        raise NotEnrolled(str(err)) from None


def enrol(store: GalleryStore, person_id: str, name: str, templates: Sequence[Template], model_id: str,
          note: str = "", valid_from: Optional[str] = None, valid_until: Optional[str] = None,
          card: Optional[str] = None) -> Person:
    """The site's version of a person, with their access card if given: enrolled afresh,
    replacing whatever `person_id` held, whole or not at all (a refusal, a card someone else
    holds included, leaves the old person as they were)."""
    return store.replace(person_id, name, templates, model_id, note=note, valid_from=valid_from,
                         valid_until=valid_until, card=checked_card(card))


def checked_card(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """A card as given in a command (FACILITY:NUMBER or NUMBER; empty or None: no card), as
    (facility, number); a mistyped one is the command's refusal."""
    from appliance.errors import FaceGateError
    from appliance.panel.cards import parse_card

    try:
        return parse_card(text) if text else None
    except FaceGateError as err:
        raise GalleryError(str(err)) from None


def add(store: GalleryStore, key: str, templates: Sequence[Template], model_id: str) -> Person:
    return store.add_templates(get(store, key).id, templates, model_id)


def remove(store: GalleryStore, key: str, missing_ok: bool = False) -> Optional[Person]:
    """Remove a person; with `missing_ok` (a numbered site change, which every door applies
    whether it held them or not) an unknown person is None rather than an error."""
    try:
        person = get(store, key)
    except NotEnrolled:
        if missing_ok:
            return None
        raise
    return store.remove(person.id)


def set_enabled(store: GalleryStore, key: str, enabled: bool) -> Person:
    return store.set_enabled(get(store, key).id, enabled)


def set_validity(store: GalleryStore, key: str, valid_from: Optional[str], valid_until: Optional[str]) -> Person:
    """When a person may enter at all; an empty date leaves that side open."""
    return store.set_validity(get(store, key).id, valid_from or None, valid_until or None)


def page(store: GalleryStore, number: int, size: int) -> Dict[str, Any]:
    """One page of the people, by name."""
    people = store.people()
    chosen = people[(number - 1) * size:number * size]
    return {"page": number, "page_size": size, "total": len(people), "people": [summary(p) for p in chosen]}
