"""The versions on a device and the links between them (see appliance/update/__init__.py)."""

import datetime
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import appliance
from appliance.errors import UpdateError

STATE_FILE = "update.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_atomically(path: Path, text: str) -> None:
    """Written whole and on disk before the rename makes it visible: a power cut leaves the old
    file or the new one."""
    partial = path.with_name(path.name + ".new")
    with open(partial, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Installation:
    """/usr/lib/facegate (or the same under a root prefix) and what is in it."""

    def __init__(self, lib: Path) -> None:
        self.lib = Path(lib)
        self.versions_dir = self.lib / "versions"
        self.trial_file = self.lib / "trial"
        self.rolled_back_file = self.lib / "rolled-back"
        self.state_file = self.lib / STATE_FILE

    @property
    def root(self) -> Path:
        """The filesystem root this installation is under ('/' on a device)."""
        return self.lib.parent.parent.parent

    def link(self, name: str) -> Optional[str]:
        """The version `current` or `previous` points at, or None."""
        path = self.lib / name
        if not path.is_symlink():
            return None
        return Path(os.readlink(path)).name

    def version_dir(self, name: str) -> Path:
        return self.versions_dir / name

    def relink(self, link: str, version: str) -> None:
        if not (self.version_dir(version) / ".complete").is_file():
            raise UpdateError("version %s is not completely installed in %s" % (version, self.versions_dir))
        temporary = self.lib / (link + ".new")
        if temporary.is_symlink() or temporary.exists():
            temporary.unlink()
        temporary.symlink_to(Path("versions") / version)
        os.replace(temporary, self.lib / link)
        _sync_folder(self.lib)

    def manifest(self, version: str) -> Dict[str, Any]:
        try:
            return json.loads((self.version_dir(version) / "MANIFEST.json").read_text())
        except (OSError, ValueError) as err:
            raise UpdateError("version %s has no readable manifest: %s" % (version, err)) from None

    def state(self) -> Dict[str, Any]:
        """The updater's record, with what the launcher and the door did since."""
        try:
            record = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            record = {}
        record["current"] = self.link("current")
        record["previous"] = self.link("previous")
        record["fallback"] = self.link("fallback")
        if self.trial_file.is_file():
            record["state"] = "trial"
            record["starts"] = _int(self.trial_file.read_text())
        if self.rolled_back_file.is_file() and record.get("state") != "rolled_back":
            # the launcher went back on its own (the updater had gone: a power cut, a crash loop)
            record.update(state="rolled_back", reason=self.rolled_back_file.read_text().strip())
        record.setdefault("state", "installed" if record["current"] else "none")
        return record

    def summary(self) -> Dict[str, Any]:
        """What a door's status says about its versions and its last update."""
        state = self.state()
        return {key: state[key] for key in ("state", "current", "previous", "version", "reason", "time", "starts")
                if state.get(key) is not None}

    def record(self, state: str, **facts: Any) -> None:
        previous = {}
        try:
            previous = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            pass
        if state == "staging":
            previous = {}  # a new update starts a new record
            self._unlink("rolled-back")
        previous.update(facts, state=state, time=_now())
        write_atomically(self.state_file, json.dumps(previous, sort_keys=True) + "\n")

    def start_trial(self, old: Optional[str]) -> None:
        """Before the switch: `fallback` names the version to go back to (while `previous` keeps
        naming the one before it), and `trial` counts the new version's starts."""
        write_atomically(self.trial_file, "0\n")
        if old:
            self.relink("fallback", old)

    def confirm(self, version: str) -> bool:
        """The door of `version` has run long enough: it stays, and the version it replaced
        becomes `previous`. True when this ended a trial."""
        if not self.trial_file.is_file() or self.link("current") != version:
            return False
        replaced = self.link("fallback")
        if replaced and replaced != version:
            self.relink("previous", replaced)
        self.record("confirmed", version=version, previous=replaced)
        self.trial_file.unlink()
        self._unlink("fallback")
        self._unlink("rolled-back")
        return True

    def roll_back(self, reason: str) -> str:
        """Back to the version before: the one an update on trial replaced (`fallback`), else
        `previous`, which then names the version left (so a second roll back goes forward again)."""
        failed, fallback = self.link("current"), self.link("fallback")
        back = fallback if fallback and fallback != failed else self.link("previous")
        if not back or back == failed:
            raise UpdateError("no previous version to go back to in %s" % self.lib)
        write_atomically(self.rolled_back_file, "%s: %s; back to %s\n" % (failed, reason, back))
        self.relink("current", back)
        if fallback:
            self._unlink("trial")
            self._unlink("fallback")
        elif failed:
            self.relink("previous", failed)
        self.record("rolled_back", version=failed, previous=back, reason=reason)
        return back

    def _unlink(self, name: str) -> None:
        path = self.lib / name
        if path.is_symlink() or path.exists():
            path.unlink()
        _sync_folder(self.lib)

    def prune(self) -> List[str]:
        """Remove the versions neither link names (a board's flash holds two, not a history)."""
        import shutil

        linked = {self.link("current"), self.link("previous"), self.link("fallback")}
        removed = []
        for path in sorted(self.versions_dir.glob("*")):
            if path.name not in linked:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def running_installation() -> Optional[Tuple[Installation, str]]:
    """The installation this code runs from and its version's name; None in a development
    checkout or a plain pip install (nothing to update or confirm there)."""
    version_dir = Path(appliance.__file__).resolve().parent.parent.parent
    if version_dir.parent.name != "versions" or not (version_dir / ".complete").is_file():
        return None
    return Installation(version_dir.parent.parent), version_dir.name
