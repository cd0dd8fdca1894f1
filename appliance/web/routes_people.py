"""People (list, enrol from photos or the door's camera, validity, card, disable, remove) and attempts
(snapshots, labels as tuning evidence, a test photo against the gallery)."""

import logging
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import bottle
import numpy as np

from appliance.errors import FaceGateError
from appliance.web.app import render

log = logging.getLogger(__name__)

CAPTURE_SECONDS = 30.0  # the camera enrolment gives up after this long without enough good frames
CAPTURE_KEEP = 3  # good frames kept as templates
MAX_PHOTOS = 10  # photos read from one enrolment form
# what a person in front of the camera should do about each quality reason (vision/quality.py)
GUIDANCE = (("too small", "come closer"), ("turned sideways", "look straight at the camera"),
            ("tilted up or down", "look at the camera, not up or down"), ("head tilted", "hold your head upright"),
            ("blurred", "hold still"), ("too dark", "more light on the face, please"),
            ("overexposed", "less light: step out of the glare"))


def guidance(reasons: List[str]) -> str:
    for start, advice in GUIDANCE:
        if any(reason.startswith(start) for reason in reasons):
            return advice
    return "hold still"


class Capture:
    """Enrolment from the door's camera: the frames the door publishes, each checked at the
    enrolment limits; the best CAPTURE_KEEP of different moments are enrolled in one transaction."""

    def __init__(self, page, name: str, force: bool, origin: Dict, card: str = "") -> None:
        self.page, self.name, self.force, self.origin, self.card = page, name, force, origin, card
        self.advice = "look at the camera"
        self.kept = 0
        self.done = False
        self.result: Optional[str] = None
        self.ok = False
        self.thread = threading.Thread(target=self._run, name="web-capture", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from appliance.gallery.enrol import Enroller
        from appliance.vision.images import decode

        try:
            pipeline = self.page.pipeline()
            with self.page.gallery(pipeline.embedder.model_id) as store:
                enroller = Enroller(self.page.config, pipeline, store)
                templates, seen = [], None
                deadline = time.monotonic() + CAPTURE_SECONDS
                while len(templates) < CAPTURE_KEEP and time.monotonic() < deadline:
                    self.page.door.watch()
                    data = self.page.door.frame()
                    if data is None or data == seen:
                        time.sleep(0.1)  # the next frame is a file the door writes: nothing to wait on
                        continue
                    seen = data
                    try:
                        template = enroller.template_from_image(decode(data, "the camera's frame"), "camera")
                    except FaceGateError as err:
                        text = str(err)
                        self.advice = ("step in front of the camera" if text == "no face found" else
                                       "only the person being enrolled in view" if "faces in the photo" in text
                                       else guidance(text.split("; ")))
                        continue
                    if templates and _distance(templates[0], template) > self.page.config.verification.identity_change_distance:
                        templates = [template]  # someone else stepped in: start again with them
                        self.advice = "one person at a time, please"
                    else:
                        templates.append(template)
                    self.kept = len(templates)
                    if len(templates) > 1 or self.advice != "one person at a time, please":
                        self.advice = "good: hold still (%d of %d)" % (self.kept, CAPTURE_KEEP)
                    time.sleep(0.4)  # different moments, not three copies of one
                if len(templates) < CAPTURE_KEEP:
                    self.result = "not enrolled: only %d good frames in %.0f s (last advice: %s)" % (
                        len(templates), CAPTURE_SECONDS, self.advice)
                    return
                self.result, self.ok = enrol_templates(self.page, enroller, store, self.name, templates, self.force,
                                                       how="camera", origin=self.origin, card=self.card)
        except FaceGateError as err:
            self.result = "not enrolled: %s" % err
        except Exception as err:  # the page's thread: said on the page, never silent
            log.exception("camera enrolment failed")
            self.result = "not enrolled: the page failed (%s: %s)" % (type(err).__name__, err)
        finally:
            self.done = True


def _distance(a, b) -> float:
    return float(1.0 - np.dot(a.embedding, b.embedding))


def enrol_templates(page, enroller, store, name, templates, force, how, valid_from=None, valid_until=None,
                    origin=None, card=""):
    """(message, enrolled): the enrolment rules (duplicates refused unless forced), the person and
    their access card (`card`, FACILITY:NUMBER, optional) in one transaction."""
    from appliance.panel.cards import parse_card

    existing = enroller.existing_person(name)
    if existing is not None:
        return "%s is already enrolled: nothing changed (remove them first to enrol afresh)" % name, False
    card_value = parse_card(card) if card else None  # a mistyped card refuses before anything changes
    duplicate = None if force else enroller.duplicate_of(templates, None)
    if duplicate is not None:
        return ("not enrolled: looks like %s, already enrolled (distance %.2f); tick 'a different person' if it "
                "is not them" % (duplicate.person.name, duplicate.distance)), False
    person = store.enrol(name, templates, enroller.pipeline.embedder.model_id, valid_from=valid_from or None,
                         valid_until=valid_until or None, card=card_value)  # a card someone holds refuses it all
    page.record("enroll", person, origin=origin, templates=len(templates), how=how,
                **({"card": "%d:%d" % person.card} if person.card else {}))
    return "enrolled %s from %d %s%s" % (person.name, len(templates), how if how == "photos" else "camera frames",
                                         " with card %d:%d" % person.card if person.card else ""), True


def register(app: bottle.Bottle, page) -> None:
    captures: Dict[str, Capture] = {}

    def people_page(message=None, error=None):
        query = (bottle.request.query.getunicode("q") or "").strip()
        people = []
        if Path(page.config.gallery.path).exists():
            with page.gallery() as store:
                people = [p for p in store.people() if query.casefold() in p.name.casefold()]
        return render("people.tpl", page=page, people=people, q=query, message=message, error=error,
                      capture=captures.get(page.session().user))

    @app.get("/people")
    def people():
        return people_page(message=bottle.request.query.getunicode("message"))

    @app.get("/people/<person_id>/face.png")
    def face(person_id):
        with page.gallery() as store:
            crops = [row[3] for row in store.templates_of(person_id) if row[3]]
        if not crops:
            bottle.abort(404, "no face kept for this person (gallery.keep_crops is off)")
        bottle.response.content_type = "image/png"
        return crops[0]

    @app.post("/people/enrol")
    def enrol_photos():
        from appliance.gallery.enrol import Enroller

        forms = bottle.request.forms
        name = (forms.getunicode("name") or "").strip()
        uploads = bottle.request.files.getall("photos")
        if not name or not uploads:
            return people_page(error="give a name and at least one photo")
        pipeline = page.pipeline()
        skipped, templates = [], []
        with page.gallery(pipeline.embedder.model_id) as store:
            enroller = Enroller(page.config, pipeline, store)
            from appliance.vision.images import decode

            for upload in uploads[:MAX_PHOTOS]:
                try:
                    image = decode(upload.file.read(), upload.raw_filename or "photo")
                    templates.append(enroller.template_from_image(image, upload.raw_filename or "photo"))
                except FaceGateError as err:
                    skipped.append("%s: %s" % (upload.raw_filename, err))
            if not templates:
                return people_page(error="not enrolled: no usable photo (%s)" % "; ".join(skipped))
            try:
                message, ok = enrol_templates(page, enroller, store, name, templates, bool(forms.get("force")),
                                              "photos", forms.get("valid_from"), forms.get("valid_until"),
                                              card=(forms.getunicode("card") or "").strip())
            except FaceGateError as err:
                message, ok = "not enrolled: %s" % err, False
        if skipped:
            message += "; skipped %s" % "; ".join(skipped)
        return people_page(message=message) if ok else people_page(error=message)

    @app.post("/people/capture")
    def capture_start():
        name = (bottle.request.forms.getunicode("name") or "").strip()
        if not name:
            return people_page(error="give the name of the person in front of the camera")
        user = page.session().user
        running = captures.get(user)
        if running is not None and not running.done:
            return people_page(error="a camera enrolment is already running")
        captures[user] = Capture(page, name, bool(bottle.request.forms.get("force")), page.origin(),
                                 (bottle.request.forms.getunicode("card") or "").strip())
        bottle.redirect("/people/capture")

    @app.get("/people/capture")
    def capture_page():
        return render("capture.tpl", page=page, capture=captures.get(page.session().user))

    @app.get("/people/capture.json")
    def capture_state():
        capture = captures.get(page.session().user)
        if capture is None:
            return {"running": False}
        return {"running": not capture.done, "advice": capture.advice, "kept": capture.kept, "of": CAPTURE_KEEP,
                "result": capture.result, "ok": capture.ok}

    @app.post("/people/<person_id>/<action:re:enable|disable>")
    def set_enabled(person_id, action):
        from appliance.gallery import commands

        with page.gallery() as store:
            person = commands.set_enabled(store, person_id, action == "enable")
        page.record(action, person)
        from urllib.parse import quote

        bottle.redirect("/people?message=" + quote("%sd %s" % (action, person.name)))

    @app.post("/people/<person_id>/validity")
    def set_validity(person_id):
        from urllib.parse import quote

        from appliance.gallery import commands

        forms = bottle.request.forms
        with page.gallery() as store:
            person = commands.set_validity(store, person_id, forms.get("valid_from"), forms.get("valid_until"))
        page.record("validity", person, valid_from=person.valid_from, valid_until=person.valid_until)
        bottle.redirect("/people?message=" + quote("%s: valid from %s until %s" % (
            person.name, person.valid_from or "any time", person.valid_until or "any time")))

    @app.post("/people/<person_id>/card")
    def set_card(person_id):
        """The person's access card for a panel (reader modes, card + face); empty takes it away."""
        from urllib.parse import quote

        from appliance.gallery import commands

        card = (bottle.request.forms.getunicode("card") or "").strip()
        with page.gallery() as store:
            result = commands.access_change(store, "person_card", {"person_id": person_id, "card": card or None})
            person = commands.get(store, person_id)
        page.record("person_card", person, card=result["card"])
        bottle.redirect("/people?message=" + quote("%s: %s" % (
            person.name, "card %s" % result["card"] if result["card"] else "no card")))

    @app.get("/people/<person_id>/remove")
    def remove_confirm(person_id):
        from appliance.gallery import commands

        with page.gallery() as store:
            person = commands.get(store, person_id)
        return render("remove.tpl", page=page, person=person)

    @app.post("/people/<person_id>/remove")
    def remove(person_id):
        from appliance.gallery import commands

        if bottle.request.forms.get("confirm") != person_id:
            bottle.abort(400, "not removed: confirm on the removal page")
        with page.gallery() as store:
            person = commands.remove(store, person_id)
        page.record("remove", person)
        from urllib.parse import quote

        bottle.redirect("/people?message=" + quote("removed %s" % person.name))

    @app.get("/attempts")
    def attempts():
        return attempts_page()

    def attempts_page(message=None, error=None, tested=None, confirm=None):
        from appliance.cli.tune import ATTEMPT_KINDS

        events = []
        if Path(page.config.audit.path).exists():
            store = page.audit()
            try:
                events = store.events(limit=50, kinds=ATTEMPT_KINDS, newest=True)
            finally:
                store.close()
        people = []
        if Path(page.config.gallery.path).exists():
            with page.gallery() as store:
                people = store.people()
        return render("attempts.tpl", page=page, events=list(reversed(events)), people=people, message=message,
                      error=error, tested=tested, confirm=confirm)

    @app.get("/attempts/<event_id:int>/snapshot.jpg")
    def snapshot(event_id):
        store = page.audit()
        try:
            found = store.events(limit=1, since_id=event_id - 1)
        finally:
            store.close()
        if not found or found[0].id != event_id or found[0].snapshot is None:
            bottle.abort(404, "no snapshot for event %d" % event_id)
        bottle.response.content_type = "image/jpeg"
        return found[0].snapshot

    @app.post("/attempts/<event_id:int>/label")
    def label(event_id):
        """'This was X' or 'a stranger', checked against the face the camera saw: a label the
        door's rule contradicts needs a second, deliberate click."""
        from appliance.cli.tune import STRANGER

        who = bottle.request.forms.getunicode("who") or ""
        store = page.audit()
        try:
            found = store.events(limit=1, since_id=event_id - 1)
            if not found or found[0].id != event_id:
                return attempts_page(error="no attempt %d" % event_id)
            event = found[0]
            with page.gallery() as gallery:
                label_value = STRANGER if who == STRANGER else gallery.find(who).id
                names = {p.id: p.name for p in gallery.people()}
                ids, matrix, _ = gallery.matrix()
                model_id = gallery.model_id
            warning = _contradiction(page, event, label_value, ids, matrix, names, model_id)
            if warning and bottle.request.forms.get("despite") != "1":
                return attempts_page(confirm={"event": event_id, "who": who, "warning": warning})
            store.set_label(event_id, label_value)
        except FaceGateError as err:
            return attempts_page(error=str(err))
        finally:
            store.close()
        page.record("label", None, event=event_id, label=label_value, despite=warning or None)
        return attempts_page(message="attempt %d labelled %s" % (event_id, names.get(label_value, label_value)))

    @app.post("/attempts/test")
    def test_photo():
        from appliance.gallery.index import GalleryIndex
        from appliance.recognition.identify import identify_frame
        from appliance.vision.images import decode

        upload = bottle.request.files.get("photo")
        if upload is None:
            return attempts_page(error="choose a photo to test")
        try:
            image = decode(upload.file.read(), upload.raw_filename or "photo")
            pipeline = page.pipeline()
            with page.gallery(pipeline.embedder.model_id) as store:
                index = GalleryIndex(store)
                found = identify_frame(pipeline, index, page.config, image)
        except FaceGateError as err:
            return attempts_page(error=str(err))
        tested = []
        for result, decision in found:
            match = decision.match
            tested.append({"accepted": decision.accepted, "name": match.person.name if match.person else None,
                           "distance": match.distance if np.isfinite(match.distance) else None,
                           "reason": decision.reason, "quality": list(result.quality.reasons)})
        return attempts_page(tested=tested or [{"accepted": False, "name": None, "distance": None,
                                                "reason": "no face found", "quality": []}])


def _contradiction(page, event, label, ids, matrix, names, model_id) -> Optional[str]:
    from appliance.recognition.decision import threshold_for
    from appliance.tune import analysis

    if event.embedding is None or event.model_id != model_id or not ids:
        return None
    counts = list(np.unique(np.asarray(ids), return_counts=True)[1])
    threshold = threshold_for(page.config, model_id, counts).value
    flagged = analysis.contradictions(event.embedding[None, :], [label], matrix, ids, threshold)
    if not flagged:
        return None
    return ("the door's rule accepts this face as %s (distance %.3f), not as %s: check the snapshot"
            % (names.get(flagged[0].nearest, flagged[0].nearest), flagged[0].distance,
               "a stranger" if label == "stranger" else names.get(label, label)))
