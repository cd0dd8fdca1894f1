"""Options and helpers shared by the command modules."""

import argparse

from appliance import config as config_module
from appliance.config import Config


def shown_time(stamp) -> str:
    """A stored UTC time as a person reads it: local time with its offset."""
    import datetime

    try:
        return datetime.datetime.fromisoformat(stamp).astimezone().isoformat(timespec="seconds")
    except (TypeError, ValueError):
        return str(stamp)


def local_time(text, option: str):
    """An aware datetime from a command-line time; a time without an offset is local."""
    import datetime

    from appliance.errors import FaceGateError

    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise FaceGateError("%s %r is not a date or time (like 2026-11-25 or 2026-11-25T08:00)"
                            % (option, text)) from None
    return moment if moment.tzinfo else moment.astimezone()


def audit_line(event: dict) -> str:
    """One audit event (its summary) as a line of `facegate audit` and `admin history`."""
    figures = ""
    if event.get("distance") is not None:
        margin = event.get("margin")
        figures = " distance %.3f margin %s" % (event["distance"], "-" if margin is None else "%.3f" % margin)
    detail = event.get("detail") or {}
    note = detail.get("reason") or detail.get("message") or detail.get("alarm") or detail.get("action") or ""
    return "%5d %s %-9s %s%s %s" % (event.get("id") or 0, shown_time(event.get("time")), event.get("kind"),
                                   pad(event.get("person_name") or "-", 16), figures, note)


def known_name(value: str, choices, what: str) -> None:
    """Refuse an unknown name with the close ones, rather than answer it with nothing."""
    from appliance.errors import FaceGateError, did_you_mean

    if value not in choices:
        raise FaceGateError("no %s %r%s; known: %s" % (what, value, did_you_mean(value, choices), ", ".join(choices)))


def plural(count: int, word: str, words: str = "") -> str:
    """'1 template', '2 templates' (give `words` where adding an s is wrong: person, people)."""
    return "%d %s" % (count, word if count == 1 else (words or word + "s"))


def pad(text: str, width: int) -> str:
    """`text` padded to `width` terminal columns: CJK characters take two, so names line up."""
    import unicodedata

    used = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - used)


def confirmed(question: str, assume_yes: bool) -> bool:
    """Ask at a terminal; with --yes, or when no one is at a terminal (a script), go ahead."""
    import sys

    if assume_yes or not sys.stdin.isatty():
        return True
    return input("%s [y/N] " % question).strip().lower() in ("y", "yes")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--backend", help="inference backend, overriding the config")
    parser.add_argument("--models-dir", help="installed models directory, overriding the config")
    parser.add_argument("--rknn-target", help="NPU the .rknn files were made for (rknn backends), "
                                              "overriding the config")


def add_door_options(parser: argparse.ArgumentParser) -> None:
    """The door's parts as `run` and `selftest` take them from the command line (config.FLAGS)."""
    parser.add_argument("--camera", help="camera source, overriding camera.source")
    parser.add_argument("--relay-port", help="relay serial port, overriding relay.port")


def load_config(args: argparse.Namespace) -> Config:
    """The config file (or the defaults) with the command line's overrides (config.FLAGS)."""
    return config_module.with_flags(config_module.load(getattr(args, "config", None)), args)


def add_gallery_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", help="gallery database file, overriding the config")


def open_gallery(args: argparse.Namespace, config: Config, model_id=None, create: bool = False):
    """The gallery named by --gallery or gallery.path. Only commands that create (`create`) may
    start a new one, and they say so: a mistyped path must not read as an empty gallery."""
    from pathlib import Path

    from appliance.errors import FaceGateError
    from appliance.gallery.store import GalleryStore

    path = config.gallery.path  # --gallery is in it (config.FLAGS)
    if not Path(path).exists():
        if not create:
            raise FaceGateError("gallery %s does not exist: check --gallery or gallery.path ('facegate enroll' "
                                "and 'facegate gallery import' create a new one)" % path)
        print("creating a new gallery %s" % path)
    return GalleryStore(path, model_id=model_id, max_templates=config.gallery.max_templates)


def record_change(config: Config, action: str, person=None, origin=None, **detail) -> None:
    """A change made at this console (enrol, remove, disable ...) goes into the door's audit trail
    with who made it, when that trail exists here; a console away from any door has none. The web
    page gives its own `origin` (its user and their address)."""
    import getpass
    from pathlib import Path

    from appliance.audit import AuditStore, Event

    if not Path(config.audit.path).is_file():
        return
    if origin is None:
        try:
            origin = {"via": "cli", "user": getpass.getuser()}
        except (KeyError, OSError):
            origin = {"via": "cli", "user": None}
    store = AuditStore(config.audit.path)
    try:
        store.record(Event("change", person_id=person.id if person else None,
                           person_name=person.name if person else None,
                           detail=dict(detail, action=action, origin=origin)))
    finally:
        store.close()


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int, label: str) -> None:
        import sys

        self.total, self.label, self.done = total, label, 0
        self.stream = sys.stderr
        self.enabled = self.stream.isatty() and total > 0

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / self.total)
            self.stream.write("\r%s [%s%s] %d/%d" % (self.label, "#" * filled, "." * (30 - filled),
                                                     self.done, self.total))
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()
