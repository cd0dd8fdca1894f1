"""Updates with a way back, on a real installation under a temporary root: bundles made the way
`make bundle` makes them (install.sh, the launcher, a wheel of the code, the models, a manifest),
installed with install.sh, the door started by the board's init script on a looping video with
the relay on a pseudo-terminal, and `facegate update` run through the installed launcher.

The versions are this checkout's code with only its version changed, plus two changed on purpose:
one whose gallery migration adds a column (an additive schema one on, readable by this one), and one
whose door fails as it starts. No part is faked; a power cut is SIGKILL of every process of the
update and of the door, which leaves the page cache to the kernel (a real cut may lose writes
that were not synced, which is why every switch is fsynced before it counts).
"""

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, wait_until
from test_mqtt import broker, key_file  # noqa: F401 (fixtures)
from test_service import PROBES, make_clip
from test_service import gallery_path  # noqa: F401 (fixture: the seed gallery, enrolled once)

from appliance.config import from_dict
from appliance.gallery import store as store_schema
from facegate_host.bundle import build_appliance_wheel, copy_installer, finish, onnx_models, record_selftest
from facegate_host.emulator import RelayEmulator

GOOD = ("9.1.0", "9.2.0", "9.3.0")
MIGRATES = "9.2.0"  # adds a column to the gallery (one schema on, readable by this one)
BROKEN = "9.4.0"  # its door fails as it starts; its self-test passes
KILLS = int(os.environ.get("FACEGATE_UPDATE_KILLS", "20"))

SCHEMA_4 = '''

def _migrate_to_next(db):
    db.execute("ALTER TABLE people ADD COLUMN badge TEXT")


MIGRATIONS[SCHEMA_VERSION + 1] = _migrate_to_next
READABLE_BY[SCHEMA_VERSION + 1] = SCHEMA_VERSION  # only adds: this schema's code can still use it
SCHEMA_VERSION += 1
'''
NOW = store_schema.SCHEMA_VERSION  # the gallery schema of this code; MIGRATES moves it one on
BREAK_THE_DOOR = '''

def _serve(args):
    raise FaceGateError("version %s is broken on purpose" % __import__("appliance").__version__)
'''


def _source(repo_copy: Path, version: str) -> Path:
    shutil.copytree(ROOT / "appliance", repo_copy / "appliance", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, repo_copy / name)
    init = repo_copy / "appliance" / "__init__.py"
    text = init.read_text()
    assert "__version__ = " in text
    init.write_text("\n".join('__version__ = "%s"' % version if line.startswith("__version__") else line
                              for line in text.splitlines()) + "\n")
    if version == MIGRATES:
        with open(repo_copy / "appliance" / "gallery" / "store.py", "a") as store:
            store.write(SCHEMA_4)
    if version == BROKEN:
        with open(repo_copy / "appliance" / "cli" / "run.py", "a") as run:
            run.write(BREAK_THE_DOOR)
    return repo_copy


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, models_dir):
    """version -> bundle tarball, for an x86 host whose Python has numpy, OpenCV and ONNX Runtime."""
    work = tmp_path_factory.mktemp("bundles")
    config = from_dict({"models": {"dir": str(models_dir)}}, "test")
    reference = work / "reference"
    record_selftest(config, models_dir, PROBES / "obama.jpg", reference)
    made = {}
    for version in GOOD + (BROKEN,):
        root = work / version / ("facegate-host-%s" % version)
        shutil.copytree(ROOT / "rootfs_overlay", root / "overlay", ignore=shutil.ignore_patterns("README.md"))
        (root / "meta").write_text('BOARD_DESCRIPTION="an x86-64 host (tests)"\nARCH="amd64"\n')
        copy_installer(ROOT, root)
        build_appliance_wheel(_source(work / version / "source", version), root / "wheelhouse")
        for path in onnx_models(config, models_dir):
            target = root / "models" / path.relative_to(models_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        shutil.copytree(reference, root / "models" / "selftest")
        made[version] = work / ("facegate-host-%s.tar.gz" % version)
        finish(root, "host", made[version])
    return made


class Device:
    """A root with FaceGate installed from a bundle, its door run by the init script."""

    def __init__(self, tmp_path: Path, first_bundle: Path, gallery: Path, relay: str, extra: str = "") -> None:
        self.root = tmp_path / "root"
        unpacked = tmp_path / "first"
        with tarfile.open(first_bundle) as tar:
            tar.extractall(unpacked)
        folder = next(unpacked.iterdir())
        installed = subprocess.run(["sh", str(folder / "install.sh"), "--root", str(self.root), "--python",
                                    sys.executable], capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        self.lib = self.root / "usr" / "lib" / "facegate"
        data = self.root / "userdata" / "facegate"
        data.mkdir(parents=True)
        shutil.copy2(gallery, data / "gallery.db")
        self.audit = data / "audit.db"
        clip = make_clip(tmp_path / "doorway.mp4", [PROBES / "obama.jpg"], seconds=1.0)
        # the site's config: kept by every install and update after this one
        self.config = self.root / "etc" / "facegate" / "config.toml"
        self.config.write_text("""
[models]
backend = "onnxruntime"
dir = "%s"
[camera]
source = "%s"
loop = true
[gallery]
path = "%s"
[audit]
path = "%s"
[relay]
port = "%s"
[door]
unlock_seconds = 0.5
cooldown_seconds = 0.2
person_cooldown_seconds = 0.5
[update]
confirm_seconds = 2
%s""" % (self.root / "usr" / "share" / "facegate" / "models", clip, data / "gallery.db", self.audit, relay, extra))
        self.env = {k: v for k, v in os.environ.items() if k != "FACEGATE_MODELS_DIR"}
        self.env.update(FACEGATE_ROOT=str(self.root), FACEGATE_BIN=str(self.root / "usr" / "bin" / "facegate"),
                        FACEGATE_PYTHON=sys.executable, PYTHONPATH="",
                        PATH="%s:/usr/sbin:/sbin" % os.environ.get("PATH", "/usr/bin:/bin"))

    def facegate(self, *argv, timeout=300, **options):
        return subprocess.run([str(self.root / "usr" / "bin" / "facegate")] + list(map(str, argv)), env=self.env,
                              capture_output=True, text=True, timeout=timeout, **options)

    def service(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(self.root / "etc" / "init.d" / "S95facegate"), action], env=self.env,
                              capture_output=True, text=True, timeout=300)

    def update(self, *argv) -> subprocess.CompletedProcess:
        return self.facegate("update", *argv, "--config", self.config)

    def link(self, name: str) -> str:
        return os.readlink(self.lib / name).split("/")[-1]

    def state(self) -> dict:
        done = self.facegate("update", "--status", "--json", "--config", self.config)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def running_version(self) -> str:
        """The version whose door runs, as its status file says ('running VERSION')."""
        assert self.service("status").returncode == 0, "no door runs"
        state = (self.root / "var" / "run" / "facegate.status").read_text().split()
        assert state[0] == "running", state
        return state[1]

    def power_cut(self) -> None:
        """Every FaceGate process dies at once, and /var/run (a tmpfs on the board) is empty at boot."""
        def none_left() -> bool:
            # again and again: a process forked after one pass (a child the updater was starting,
            # the daemon start-stop-daemon was detaching) would escape a single pkill
            subprocess.run(["pkill", "-KILL", "-f", str(self.root)], check=False)
            return subprocess.run(["pgrep", "-f", str(self.root)], capture_output=True).returncode == 1

        assert wait_until(none_left, timeout=10)
        shutil.rmtree(self.root / "var" / "run", ignore_errors=True)


def grants_after(emulator: RelayEmulator, moment: float, timeout: float = 60) -> bool:
    """The door opened (an unlock on the relay) after `moment`: it runs and opens for enrolled people."""
    return emulator.wait_for(lambda e: any(event.on and event.at >= moment for event in e.events), timeout=timeout)


def schema_of(path: Path) -> int:
    db = sqlite3.connect(str(path))
    try:
        return int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def emulator(tmp_path):
    built = RelayEmulator(link=str(tmp_path / "relay"))
    yield built
    built.close()


def test_an_update_is_tested_switched_and_left_again_when_its_door_fails(tmp_path, bundles, gallery_path, emulator):
    device = Device(tmp_path, bundles["9.1.0"], gallery_path, emulator.path)
    first = device.link("current")
    assert first.startswith("9.1.0-") and not (device.lib / "previous").exists()
    assert os.readlink(device.root / "usr/share/facegate/models") == "../../lib/facegate/current/models"
    try:
        started = device.service("start")
        assert started.returncode == 0 and "OK" in started.stdout, started.stdout
        assert grants_after(emulator, 0), "the first version never opened for an enrolled person"

        # a good update: self-tested while the old door runs, switched, its door proves itself
        moment = time.monotonic()
        done = device.update(bundles[MIGRATES])
        assert done.returncode == 0, done.stdout + done.stderr
        assert "self-testing" in done.stdout and "runs the door" in done.stdout
        second = device.link("current")
        assert second.startswith("9.2.0-") and device.link("previous") == first
        assert device.running_version() == second
        assert device.state()["state"] == "confirmed" and not (device.lib / "trial").exists()
        assert grants_after(emulator, moment)
        gallery = device.root / "userdata" / "facegate" / "gallery.db"
        assert schema_of(gallery) == NOW + 1  # the new version migrated the gallery
        assert (device.lib / "backups" / first / "gallery.db").is_file()  # as the old version left it
        assert schema_of(device.lib / "backups" / first / "gallery.db") == NOW

        # an update whose door fails: the updater goes back by itself, and the old door runs again
        moment = time.monotonic()
        broken = device.update(bundles[BROKEN])
        assert broken.returncode == 2, broken.stdout + broken.stderr
        assert "did not start" in broken.stderr and "broken on purpose" in broken.stderr
        assert "went back to %s" % second in broken.stderr
        assert device.link("current") == second and device.running_version() == second
        state = device.state()
        assert state["state"] == "rolled_back" and state["version"].startswith(BROKEN)
        assert grants_after(emulator, moment)

        # by hand, back to the first version: it opens the gallery the newer schema left (additions only)
        moment = time.monotonic()
        back = device.update("--rollback")
        assert back.returncode == 0 and first in back.stdout, back.stdout + back.stderr
        assert device.running_version() == first and schema_of(gallery) == NOW + 1
        assert grants_after(emulator, moment)

        # a bundle that is not whole is refused before anything moves
        damaged = tmp_path / "damaged.tar.gz"
        with tarfile.open(bundles["9.3.0"]) as source, tarfile.open(damaged, "w:gz") as target:
            for member in source.getmembers():
                data = source.extractfile(member) if member.isfile() else None
                if member.name.endswith("install.sh"):
                    content = data.read() + b"\n# changed\n"
                    member.size = len(content)
                    import io

                    data = io.BytesIO(content)
                target.addfile(member, data)
        refused = device.update(damaged)
        assert refused.returncode == 2 and "damaged: install.sh does not match" in refused.stderr, refused.stderr
        assert device.link("current") == first and device.running_version() == first
    finally:
        device.service("stop")


def test_a_version_that_cannot_even_start_python_is_left_by_the_launcher(tmp_path, bundles, gallery_path, emulator):
    """The launcher's own way back, without the updater (gone with a power cut): three starts on
    trial that never prove it, and the fourth runs the previous version."""
    device = Device(tmp_path, bundles["9.1.0"], gallery_path, emulator.path)
    first = device.link("current")
    done = device.update(bundles["9.3.0"], "--service", "none")  # switched, on trial, not started
    assert done.returncode == 0 and "on trial" in done.stdout, done.stdout + done.stderr
    trial = device.link("current")
    # its code is damaged: Python cannot even import it
    (device.lib / "versions" / trial / "python" / "appliance" / "__init__.py").write_text("import no_such_module\n")
    try:
        started = device.service("start")
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.count("on trial; starting again") == 3, started.stdout
        assert device.link("current") == first and device.running_version() == first
        assert "did not run its door after 3 starts" in (device.lib / "rolled-back").read_text()
        assert device.state()["state"] == "rolled_back"
        assert grants_after(emulator, 0)
    finally:
        device.service("stop")


def test_a_power_cut_at_any_moment_of_an_update_leaves_a_door_that_opens(tmp_path, bundles, gallery_path, emulator):
    seed = int(os.environ.get("FACEGATE_UPDATE_SEED", time.time()))
    print("power cuts: seed %d, %d cuts (FACEGATE_UPDATE_SEED, FACEGATE_UPDATE_KILLS)" % (seed, KILLS))
    chance = random.Random(seed)
    device = Device(tmp_path, bundles["9.1.0"], gallery_path, emulator.path)
    try:
        assert device.service("start").returncode == 0
        # one whole update first: how long one takes sets where the cuts fall
        began = time.monotonic()
        assert device.update(bundles["9.3.0"]).returncode == 0
        whole = time.monotonic() - began
        targets = ["9.1.0", "9.2.0", BROKEN, "9.3.0"]
        seen = set()
        for cut in range(KILLS):
            target = targets[cut % len(targets)]
            if target == device.link("current").split("-")[0]:
                target = "9.2.0" if target != "9.2.0" else "9.1.0"
            update = subprocess.Popen([str(device.root / "usr/bin/facegate"), "update", str(bundles[target]),
                                       "--config", str(device.config)], env=device.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            at = chance.uniform(0, whole)
            try:
                update.wait(timeout=at)
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            device.power_cut()
            update.wait()
            state = device.state()
            seen.add(state["state"])
            # the boot: the init script starts the door, whatever the cut left
            moment = time.monotonic()
            booted = device.service("start")
            assert booted.returncode == 0, "cut %d at %.1f s into %s (%s): %s" % (
                cut, at, target, state, booted.stdout + booted.stderr)
            current = device.link("current")
            assert (device.lib / "versions" / current / ".complete").is_file()
            assert not current.startswith(BROKEN) and device.running_version() == current
            assert grants_after(emulator, moment), "cut %d at %.1f s into %s: the door never opened" % (cut, at, target)
            print("cut %d at %4.1f s into the update to %s (%s): boots %s" % (
                cut, at, target, "it had finished" if finished else state["state"], device.running_version()))
            # the door proves itself before the next update (a trial left open would be counted again)
            assert wait_until(lambda: not (device.lib / "trial").exists(), timeout=30)
        print("states the cuts left: %s" % ", ".join(sorted(seen)))
    finally:
        device.service("stop")


def test_the_administrator_updates_a_door_over_mqtt_and_sees_it_in_status(tmp_path, bundles, gallery_path, emulator,
                                                                          broker, key_file):
    """The signed `update` command: the door downloads the bundle from a web server on the site,
    checks its size and hash, and its detached updater does the rest; `admin status` follows."""
    import functools
    import http.server
    import threading

    from conftest import run_cli
    from test_mqtt import SITE

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy2(bundles["9.2.0"], served / "bundle.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/bundle.tar.gz" % server.server_address[1]
    mqtt = """[mqtt]
enabled = true
host = "127.0.0.1"
port = %d
tls = false
site = "%s"
device = "door1"
signing_key_file = "%s"
trusted_keys_file = "%s"
keepalive = 5
state_path = "%s"
""" % (broker.port, SITE, key_file.door("door1"), key_file.admin_public, tmp_path / "mqtt-state.db")
    device = Device(tmp_path, bundles["9.1.0"], gallery_path, emulator.path, extra=mqtt)
    admin = tmp_path / "admin.toml"
    admin.write_text(key_file.admin_toml(broker))
    first = device.link("current")
    try:
        assert device.service("start").returncode == 0

        def status():
            done = run_cli("admin", "status", "--json", "--config", admin)
            doors = {door["door"]: door for door in json.loads(done.stdout)["doors"]} if done.stdout else {}
            return doors.get("door1") or {}

        assert wait_until(lambda: (status().get("update") or {}).get("current") == first, timeout=30), json.dumps(status())
        # a bundle that is not the one the command signed: refused after the download, nothing moves
        wrong = run_cli("admin", "update", bundles["9.3.0"], "--url", url, "--door", "door1", "--config", admin)
        assert wrong.returncode == 0, wrong.stdout + wrong.stderr  # accepted: the door checks as it downloads
        assert wait_until(lambda: (status().get("update") or {}).get("state") == "failed", timeout=60)
        update = status()["update"]
        assert "the command named" in update["reason"] and update["current"] == first  # its size or its hash
        shown = run_cli("admin", "status", "--config", admin)
        assert "LAST UPDATE FAILED" in shown.stdout, shown.stdout
        assert device.running_version() == first

        sent = run_cli("admin", "update", bundles["9.2.0"], "--url", url, "--door", "door1", "--config", admin)
        assert sent.returncode == 0 and "door1" in sent.stdout, sent.stdout + sent.stderr
        assert wait_until(lambda: (status().get("update") or {}).get("state") == "confirmed"
                          and status()["update"]["current"].startswith("9.2.0-"), timeout=120), status()
        assert device.running_version().startswith("9.2.0-")
        shown = run_cli("admin", "status", "--config", admin)
        assert "version 9.2.0-" in shown.stdout and "updated" in shown.stdout, shown.stdout
        # the command is in the door's audit trail with who sent it
        changes = device.facegate("audit", "--audit", device.audit, "--kind", "change", "--json")
        actions = [json.loads(line)["detail"] for line in changes.stdout.splitlines()]
        updates = [detail for detail in actions if detail.get("action") == "update"]
        assert len(updates) == 2 and updates[-1]["origin"]["signer"] == "admin", actions
    finally:
        device.service("stop")
        server.shutdown()


def test_the_installer_updates_a_door_from_its_web_page(tmp_path, bundles, gallery_path, emulator):
    """An uploaded bundle goes to the same detached updater as a fleet update: self-tested,
    switched, proven; the upload is audited with the page's user."""
    from test_web import PASSWORD, answers, free_port, request

    port = free_port()
    web = """[web]
enabled = true
address = "127.0.0.1"
port = %d
users_file = "%s"
cert_file = "%s"
key_file = "%s"
live_dir = "%s"
""" % (port, tmp_path / "web-users.json", tmp_path / "web-cert.pem", tmp_path / "web-key.pem", tmp_path / "live")
    device = Device(tmp_path, bundles["9.1.0"], gallery_path, emulator.path, extra=web)
    added = device.facegate("web", "passwd", "ada", "--config", device.config, "--password-stdin", input=PASSWORD)
    assert added.returncode == 0, added.stderr
    site = {"port": port}
    first = device.link("current")
    try:
        assert device.service("start").returncode == 0
        assert wait_until(lambda: answers(site), timeout=60)
        status, headers, _ = request(site, "GET", "/login")
        pre = headers["Set-Cookie"].split(";")[0]
        status, headers, _ = request(site, "POST", "/login", {"user": "ada", "password": PASSWORD,
                                                             "csrf": pre.split("=", 1)[1]}, cookie=pre)
        assert status == 303, status
        cookie = headers["Set-Cookie"].split(";")[0]
        page = request(site, "GET", "/door", cookie=cookie)[2].decode()
        assert 'id="update-form"' in page  # an installed door offers it
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        boundary = "facegatetest"
        body = ("--%s\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n%s\r\n--%s\r\nContent-Disposition: "
                "form-data; name=\"bundle\"; filename=\"facegate-host-9.2.0.tar.gz\"\r\nContent-Type: "
                "application/gzip\r\n\r\n" % (boundary, token, boundary)).encode() \
            + bundles["9.2.0"].read_bytes() + ("\r\n--%s--\r\n" % boundary).encode()
        status, headers, _ = request(site, "POST", "/door/update", body,
                                     {"Content-Type": "multipart/form-data; boundary=" + boundary}, cookie=cookie)
        assert status == 303 and "update+to+facegate-host-9.2.0.tar.gz+started" in headers["Location"], headers
        assert wait_until(lambda: device.state().get("state") == "confirmed"
                          and device.state()["current"].startswith("9.2.0-"), timeout=180), device.state()
        assert device.running_version().startswith("9.2.0-") and first.startswith("9.1.0-")
        changes = device.facegate("audit", "--audit", device.audit, "--kind", "change", "--json")
        updates = [json.loads(line)["detail"] for line in changes.stdout.splitlines()
                   if json.loads(line)["detail"].get("action") == "update"]
        assert updates[-1]["origin"] == {"via": "web", "user": "ada", "address": "127.0.0.1"}
        assert updates[-1]["sha256"] == hashlib.sha256(bundles["9.2.0"].read_bytes()).hexdigest()
        assert wait_until(lambda: answers(site), timeout=60)  # the new version's door serves its page
    finally:
        device.service("stop")

