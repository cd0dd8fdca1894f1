"""Enrolment rules: one good face per photo, stricter quality than at the door, no duplicates."""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from appliance.config import Config, QualityConfig
from appliance.errors import FaceGateError, GalleryError
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore, Person, Template
from appliance.signals import interrupt_after
from appliance.vision.align import align_face
from appliance.vision.pipeline import FacePipeline, read_image
from appliance.vision.quality import assess

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class EnrolmentRefused(FaceGateError):
    """A photo or a person was refused, with the reason."""


@dataclass
class EnrolReport:
    enrolled: List[Tuple[Person, int]] = field(default_factory=list)  # person, templates added
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # photo or name, reason
    already: List[str] = field(default_factory=list)  # names enrolled before (a rerun skips them)


def enrolment_limits(config: Config) -> QualityConfig:
    """The stricter limits for enrolment photos ([enrolment.quality])."""
    return config.enrolment.quality


def encode_crop(aligned_bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", aligned_bgr)
    return data.tobytes() if ok else b""


def group_photos(folder: Path) -> Dict[str, List[Path]]:
    """Photos by person: a sub-folder per person, or flat files named NAME_N.jpg (the seed's way)."""
    if not folder.is_dir():
        raise FaceGateError("%s is not a folder" % folder)
    groups: Dict[str, List[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            photos = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if photos:
                groups.setdefault(entry.name, []).extend(photos)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            name = re.sub(r"[_-]\d+$", "", entry.stem) or entry.stem
            groups.setdefault(name, []).append(entry)
    return groups


class Enroller:
    def __init__(self, config: Config, pipeline: FacePipeline, store: GalleryStore,
                 index: Optional[GalleryIndex] = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.store = store
        self.index = index or GalleryIndex(store)
        self.limits = enrolment_limits(config)

    def template_from_image(self, image: np.ndarray, source: str) -> Template:
        faces = self.pipeline.detect(image)
        if not faces:
            raise EnrolmentRefused("no face found")
        if len(faces) > 1:
            raise EnrolmentRefused("%d faces in the photo; use a photo of this person alone"
                                   % len(faces))
        # Only the enrolment limits apply here, so align and assess once, not via the door's gate.
        aligned = align_face(image, faces[0].landmarks)
        quality = assess(faces[0].landmarks, aligned, self.limits)
        if not quality.passed:
            raise EnrolmentRefused("; ".join(quality.reasons))
        embedding = self.pipeline.embedder.embed(aligned)
        score = faces[0].score * max(0.0, 1.0 - abs(quality.yaw))
        crop = encode_crop(aligned) if self.config.gallery.keep_crops else None
        return Template(embedding, round(score, 4), source, crop)

    def duplicate_of(self, templates: Sequence[Template], person_id: Optional[str]):
        """The enrolled person (other than `person_id`) one of `templates` is too close to, if any:
        the rule every enrolment path (CLI, MQTT, web page) refuses a second identity by."""
        self.index.refresh()
        for template in templates:
            match = self.index.search(template.embedding)
            if (match.person is not None and match.person.id != person_id
                    and match.distance <= self.config.enrolment.duplicate_distance):
                return match
        return None

    def enrol(self, name: str, photos: Sequence[Path], force: bool = False, add: bool = False,
              note: str = "", report: Optional[EnrolReport] = None,
              on_photo: Optional[Callable[[], None]] = None, card: str = "") -> EnrolReport:
        """Enrol (or with add=True extend) one person from photos, with their access card if
        `card` (FACILITY:NUMBER) is given; refusals go to the report.

        Named alone with add=True, the person must exist; in a folder run (`report` given) add=True
        extends those who exist and enrols the others."""
        from appliance.panel.cards import parse_card

        card_value = parse_card(card) if card else None  # a mistyped card: said before any photo is read
        report_missing = report is None
        report = report or EnrolReport()
        if not add and self.existing_person(name) is not None:
            # before reading any photo: a second run of a folder goes on where the first stopped,
            # and re-enrolling someone says the one option that does it
            report.already.append(name)
            for _ in photos:
                if on_photo:
                    on_photo()
            return report
        templates = []
        for photo in photos:
            try:
                templates.append(self.template_from_image(read_image(photo), Path(photo).name))
            except FaceGateError as err:
                report.skipped.append((str(photo), str(err)))
            if on_photo:
                on_photo()
        if not templates:
            report.skipped.append((name, "not enrolled: no usable photo"))
            return report
        existing = self.existing_person(name) if add else None
        if add and existing is None and report_missing:
            try:
                self.store.find(name)
            except GalleryError as err:  # says who is close: a typo must not enrol a new person
                report.skipped.append((name, "not enrolled: %s; leave out --add to enrol a new person" % err))
                return report
        duplicate = None if force else self.duplicate_of(templates, existing.id if existing else None)
        if duplicate is not None:
            report.skipped.append((name, "not enrolled: looks like %s already enrolled (distance "
                                         "%.2f); use --force if this is a different person"
                                   % (duplicate.person.name, duplicate.distance)))
            return report
        model_id = self.pipeline.embedder.model_id
        with interrupt_after():  # a Ctrl-C after the commit must not lose the person from the report
            try:
                if existing is None:
                    person = self.store.enrol(name, templates, model_id, note=note, card=card_value)
                else:
                    with self.store.transaction():  # a card someone else holds refuses the photos too
                        person = self.store.add_templates(existing.id, templates, model_id)
                        if card_value is not None:
                            person = self.store.set_card(person.id, card_value[1], card_value[0])
            except GalleryError as err:
                report.skipped.append((name, "not enrolled: %s" % err))
                return report
            report.enrolled.append((person, len(templates)))
        self.index.refresh()
        return report

    def existing_person(self, name: str) -> Optional[Person]:
        """The person enrolled under exactly this name or id, or None (no near-name guessing)."""
        try:
            return self.store.find(name)
        except GalleryError:
            return None

    def enrol_folder(self, folder: Path, force: bool = False, add: bool = False,
                     on_photo: Optional[Callable[[], None]] = None,
                     report: Optional[EnrolReport] = None) -> EnrolReport:
        """Every person of `folder`; `report` (if given) holds what was done even when interrupted."""
        report = report if report is not None else EnrolReport()
        for name, photos in group_photos(folder).items():
            self.enrol(name, photos, force=force, add=add, report=report, on_photo=on_photo)
        return report
