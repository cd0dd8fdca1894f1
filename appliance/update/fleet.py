"""An update sent to a door by the site's administrator: a signed `update` command names a
bundle's URL, size and sha256. The signature and the hash make where the bundle is served from
irrelevant to its integrity (plain HTTP on the site's network is enough); the size bounds what a
door downloads before it knows the hash. The door hands the work to a detached updater, since the
updater stops and restarts the door itself (see apply.py)."""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Dict, Tuple

from appliance.errors import CommandError, UpdateError
from appliance.update.layout import Installation

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_request(body: Dict[str, Any], max_mb: float) -> Tuple[str, str, int]:
    """(url, sha256, size) from a command's body, or CommandError saying what is wrong."""
    url, digest, size = body.get("url"), body.get("sha256"), body.get("size")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000 \
            or any(c.isspace() for c in url):
        raise CommandError("malformed", "url must be an http:// or https:// address of the bundle")
    if not isinstance(digest, str) or not HEX64.match(digest):
        raise CommandError("malformed", "sha256 must be the bundle's SHA-256, 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise CommandError("malformed", "size must be the bundle's size in bytes")
    if size > max_mb * (1 << 20):
        raise CommandError("refused", "the bundle is %.0f MB; this door takes at most %.0f MB (update.download_max_mb)"
                           % (size / (1 << 20), max_mb))
    return url, digest, size


def download(url: str, digest: str, size: int, target: Path, timeout: float = 60.0) -> Path:
    """The bundle, whole and matching its hash, at `target`; UpdateError otherwise (and nothing left)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(str(target.parent)).free
    if free < 3 * size:  # the download, its unpacked copy and the staged version
        raise UpdateError("%d MB free in %s; an update of this bundle needs %d MB: free some space"
                          % (free >> 20, target.parent, (3 * size) >> 20))
    partial = target.with_name(target.name + ".partial")
    hasher, received = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while True:
                block = response.read(1 << 16)
                if not block:
                    break
                received += len(block)
                if received > size:
                    raise UpdateError("%s sent more than the %d bytes the command named" % (url, size))
                hasher.update(block)
                out.write(block)
    except OSError as err:  # URLError, a timeout, a full disk
        partial.unlink(missing_ok=True)
        raise UpdateError("cannot download %s: %s" % (url, getattr(err, "reason", err))) from None
    except UpdateError:
        partial.unlink(missing_ok=True)
        raise
    if received != size or hasher.hexdigest() != digest:
        partial.unlink(missing_ok=True)
        raise UpdateError("%s is not the bundle the command named (%d bytes, sha256 %s...)"
                          % (url, received, hasher.hexdigest()[:12]))
    os.replace(partial, target)
    return target


class UpdateLock:
    """One update at a time on a device; the door asks without waiting."""

    def __init__(self, installation: Installation) -> None:
        self.path = installation.lib / "update.lock"
        self._handle = None

    def acquire(self) -> bool:
        handle = open(self.path, "a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def launch(installation: Installation, url: str, digest: str, size: int, config_path: str) -> None:
    """Start the updater apart from the door: it stops this process on its way. Under systemd it
    gets a unit of its own (stopping the door's unit kills everything in it); elsewhere a new session."""
    _start(installation, ["--url", url, "--sha256", digest, "--size", str(size), "--config", config_path])


def launch_bundle(installation: Installation, bundle: Path, config_path: str) -> None:
    """The same for a bundle already on this door (uploaded at its web page)."""
    _start(installation, [str(bundle), "--config", config_path])


def _start(installation: Installation, arguments) -> None:
    probe = UpdateLock(installation)
    if not probe.acquire():
        raise CommandError("busy", "an update is already under way on this door")
    probe.release()
    launcher = installation.root / "usr" / "bin" / "facegate"
    command = [str(launcher), "update"] + list(arguments)
    if str(installation.root) == "/" and Path("/run/systemd/system").is_dir() and shutil.which("systemd-run"):
        command = ["systemd-run", "--unit", "facegate-update", "--collect", "--quiet"] + command
    # the door's own PYTHONPATH names `current`; the launcher sets it again for the updater
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    log = open(installation.lib / "update.log", "ab")
    try:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True, env=environment)
    except OSError as err:
        raise CommandError("failed", "cannot start the updater: %s" % err) from err
    finally:
        log.close()
