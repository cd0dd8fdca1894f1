"""`facegate update BUNDLE`: stage a bundle beside the running version, self-test it, switch,
start its door, and go back by itself when that door does not run.

Each step is written to update.json before it is taken, and every step leaves a device that
boots into a whole version: the staging happens under a temporary name, the switch is one
rename, and an unproven version is on trial, which the launcher ends by going back after three
starts that never proved it (see board/launcher).
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from appliance.errors import UpdateError
from appliance.models import sha256_of
from appliance.update.layout import Installation

# `python -m appliance` would put the working directory first on the path (board/launcher says why)
ENTRY = ["-c", "import sys; del sys.path[0]; from appliance.cli import main; sys.exit(main())"]
# how long a door that started must take to prove itself before the updater gives up on it:
# the door's update.confirm_seconds plus its start (models on an NPU take a few seconds)
PROOF_MARGIN_SECONDS = 60


class ServiceManager:
    """How this device stops and starts its door: systemd, the BusyBox init script, or nothing
    (a host without either: the new version is switched to and on trial until its door runs)."""

    def __init__(self, root: Path, kind: str = "auto") -> None:
        self.root = Path(root)
        self.script = self.root / "etc" / "init.d" / "S95facegate"
        if kind == "auto":
            if str(self.root) == "/" and Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
                kind = "systemd"
            elif self.script.is_file():
                kind = "init"
            else:
                kind = "none"
        self.kind = kind

    def _init(self, action: str) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if str(self.root) != "/":  # an installation under a prefix (tests, a root being prepared)
            env.update(FACEGATE_ROOT=str(self.root), FACEGATE_BIN=str(self.root / "usr" / "bin" / "facegate"))
        return subprocess.run(["sh", str(self.script), action], env=env, capture_output=True, text=True)

    def running(self) -> bool:
        if self.kind == "systemd":
            return subprocess.run(["systemctl", "is-active", "--quiet", "facegate.service"]).returncode == 0
        if self.kind == "init":
            return self._init("status").returncode == 0
        return False

    def stop(self) -> None:
        if self.kind == "systemd":
            subprocess.run(["systemctl", "stop", "facegate.service"], capture_output=True)
        elif self.kind == "init":
            self._init("stop")

    def start(self) -> Tuple[bool, str]:
        """Start the door and wait until it runs (both managers wait for it); (ok, the first
        failure's reason: the init script retries while an update is on trial)."""
        if self.kind == "systemd":
            done = subprocess.run(["systemctl", "restart", "facegate.service"], capture_output=True, text=True)
            if done.returncode == 0:
                return True, ""
            log = subprocess.run(["journalctl", "-u", "facegate.service", "-n", "3", "-o", "cat", "--no-pager"],
                                 capture_output=True, text=True)
            return False, (log.stdout.strip().splitlines() or [done.stderr.strip()])[-1]
        if self.kind == "init":
            done = self._init("start")
            failures = [line.partition("FAIL: ")[2] or line for line in (done.stdout + done.stderr).splitlines()
                        if "FAIL" in line]
            return done.returncode == 0, failures[0] if failures else _last_line(done.stdout + done.stderr)
        return False, "no service manager here: start the door yourself"


def unpack(bundle: Path, into: Path) -> Path:
    """The bundle's one folder, unpacked into `into` (emptied first) and checked against its
    manifest; a path that would land outside, a link or a damaged file is refused."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    try:
        with tarfile.open(bundle) as tar:
            members = tar.getmembers()
            for member in members:
                target = (into / member.name).resolve()
                if not (member.isfile() or member.isdir()) or not str(target).startswith(str(into.resolve()) + os.sep):
                    raise UpdateError("%s is not a FaceGate bundle: it holds %r" % (bundle, member.name))
            tar.extractall(into, members)
    except (OSError, tarfile.TarError) as err:
        raise UpdateError("cannot read the bundle %s: %s (copy it again)" % (bundle, err)) from None
    folders = [p for p in into.iterdir() if p.is_dir()]
    if len(folders) != 1:
        raise UpdateError("%s is not a FaceGate bundle (make bundle BOARD=... makes one)" % bundle)
    return verify(folders[0], bundle)


def verify(folder: Path, bundle: Path) -> Path:
    """An unpacked bundle whose every file matches its manifest."""
    if not (folder / "MANIFEST.json").is_file() or not (folder / "install.sh").is_file():
        raise UpdateError("%s is not a FaceGate bundle (make bundle BOARD=... makes one)" % bundle)
    try:
        manifest = json.loads((folder / "MANIFEST.json").read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as err:
        raise UpdateError("%s has a damaged MANIFEST.json (%s)" % (bundle, err)) from None
    for name, digest in files.items():
        path = folder / name
        if not path.is_file() or sha256_of(path) != digest:
            raise UpdateError("the bundle %s is damaged: %s does not match its manifest (copy it again)" % (bundle, name))
    return folder


class Updater:
    def __init__(self, installation: Installation, config_path: str, manager: ServiceManager,
                 python: str = sys.executable, say: Callable[[str], None] = print,
                 proof_seconds: float = 90.0) -> None:
        self.installation = installation
        self.config_path = config_path
        self.manager = manager
        self.python = python
        self.say = say
        self.proof_seconds = proof_seconds

    def stage(self, bundle: Path) -> str:
        """Unpack, check and lay out the bundle's version beside the others; its name."""
        install = self.installation
        install.record("staging", bundle=str(bundle))
        bundle = Path(bundle)
        folder = verify(bundle, bundle) if bundle.is_dir() else unpack(bundle, install.lib / "incoming")
        board = json.loads((folder / "MANIFEST.json").read_text()).get("board")
        current = install.link("current")
        if current:
            ours = install.manifest(current).get("board")
            if ours and board != ours:
                raise UpdateError("the bundle is for %s and this door is %s: use a bundle made with BOARD=%s"
                                  % (board, ours, ours))
        command = ["sh", str(folder / "install.sh"), "--stage", "--python", self.python]
        if str(install.root) != "/":
            command += ["--root", str(install.root)]
        done = subprocess.run(command, capture_output=True, text=True)
        shutil.rmtree(install.lib / "incoming", ignore_errors=True)
        if done.returncode != 0:
            raise UpdateError("staging the bundle failed: %s" % _last_line(done.stderr or done.stdout))
        return Path(done.stdout.strip().splitlines()[-1]).name

    def selftest(self, version: str) -> List[str]:
        """The new version's own self-test, on its own models; the FAIL lines (empty: passed).
        While the old door runs, the relay and camera are its own: the new one's door proves them."""
        folder = self.installation.version_dir(version)
        command = [self.python] + ENTRY + ["selftest", "--config", self.config_path,
                   "--models-dir", str(folder / "models")]
        if self.manager.running():
            command += ["--no-relay", "--no-camera"]
        env = dict(os.environ, PYTHONPATH=str(folder / "python"))
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode == 0:
            return []
        failed = [line.strip() for line in done.stdout.splitlines() if "FAIL" in line]
        return failed or [_last_line(done.stderr or done.stdout)]

    def backup_gallery(self, version: str) -> Optional[Path]:
        """A copy of the gallery as the old version left it, for a migration no older version
        can read (SQLite's online backup: consistent while a door writes)."""
        from appliance.config import load

        gallery = Path(load(Path(self.config_path)).gallery.path)
        if not gallery.is_file():
            return None
        target = self.installation.lib / "backups" / version / "gallery.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name("gallery.db.partial")
        source, copy = sqlite3.connect(str(gallery)), sqlite3.connect(str(partial))
        try:
            source.backup(copy)
        finally:
            source.close()
            copy.close()
        os.replace(partial, target)
        return target

    def switch(self, version: str) -> Optional[str]:
        """Put `version` on trial as current; the version it replaces is the fallback."""
        install = self.installation
        old = install.link("current")
        install.start_trial(old)  # before the switch: a power cut after it still finds the trial
        install.relink("current", version)
        install.record("trial", version=version, previous=old)
        return old

    def prove(self, version: str) -> Tuple[bool, str]:
        """Start the door and wait for it to prove itself (it ends the trial) or fail."""
        if self.manager.kind == "none":
            return True, ""
        started, why = self.manager.start()
        if self.installation.link("current") != version:
            return False, "its door did not start (%s), and the launcher went back" % why
        if not started:
            return False, "its door did not start: %s" % why
        deadline = time.monotonic() + self.proof_seconds
        while self.installation.trial_file.exists():
            if not self.manager.running():
                return False, "its door stopped before it had run for update.confirm_seconds"
            if time.monotonic() > deadline:
                return False, "its door did not prove itself within %.0f s" % self.proof_seconds
            time.sleep(0.5)  # the door's own clock decides; this only watches
        return True, ""

    def update(self, bundle: Path) -> str:
        install = self.installation
        version = self.stage(bundle)
        current = install.link("current")
        if version == current:
            install.record("installed", version=version)
            self.say("%s is already the running version" % version)
            return version
        install.record("testing", version=version, previous=current)
        self.say("staged %s; self-testing it" % version)
        failed = self.selftest(version)
        if failed:
            install.record("failed", version=version, reason="; ".join(failed))
            raise UpdateError("%s failed its self-test (%s); the door keeps running %s"
                              % (version, "; ".join(failed), current or "what it ran"))
        if current:
            self.backup_gallery(current)
        self.manager.stop()
        self.switch(version)
        self.say("switched to %s; starting its door" % version)
        proven, why = self.prove(version)
        if not proven:
            if install.link("current") == version:
                self.manager.stop()
                back = install.roll_back(why)
                self.manager.start()
            else:  # the launcher went back already, and the previous version's door runs
                back = install.link("current")
                install.record("rolled_back", version=version, previous=back, reason=why)
            raise UpdateError("%s %s: went back to %s" % (version, why, back))
        if self.manager.kind == "none":
            self.say("%s is on trial until its door has run for update.confirm_seconds" % version)
        else:
            self.say("%s runs the door" % version)
        install.prune()
        return version

    def roll_back(self) -> str:
        """The administrator's way back (`facegate update --rollback`)."""
        self.manager.stop()
        back = self.installation.roll_back("rolled back by hand")
        started, why = self.manager.start()
        if self.manager.kind != "none" and not started:
            raise UpdateError("went back to %s, but its door did not start: %s" % (back, why))
        return back


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
