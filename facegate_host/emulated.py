"""`make test-emulated`: the RV1126B's bundle installed into an emulated Debian bookworm arm64 root,
its self-test, and the door on the demo video there, against the host's decisions.

The root is built with debootstrap (minbase, python3 and pip from Debian) and qemu-user-static,
from the Debian mirror this machine's apt already uses, and kept under .emulated/ keyed by what
it is built from, so a second run starts in seconds. Everything FaceGate needs comes from the
bundle: nothing is copied in by hand. There is no NPU in an emulated root, so the door runs the
bundle's CPU fallback (`--backend onnxruntime`), and the rknnlite backend must fail with its
one-line error.

ONNX Runtime reads /proc/cpuinfo and sysfs's CPU lists at import and aborts on the host's x86
ones or none: the root gets a four-core Cortex-A53's (QEMU_CPU=cortex-a53, a bind-mounted
cpuinfo, the lists written into its /sys).
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("python3", "python3-pip", "ca-certificates")
SUITE = "bookworm"
CPUINFO = "".join("processor\t: %d\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
                  "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd03\n"
                  "CPU revision\t: 4\n\n" % n for n in range(4))


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (never written into the repository)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                return parts[1]
    raise SystemExit("test-emulated: no Debian %s mirror in apt's sources" % SUITE)


def build_root(cache: Path, arch: str = "arm64", packages=PACKAGES) -> Path:
    key = hashlib.sha256(("%s %s %s" % (SUITE, " ".join(packages), CPUINFO)).encode()).hexdigest()[:12]
    root = cache / ("%s-%s" % (arch, key))
    if (root / ".complete").is_file():
        print("emulated root: %s (cached)" % root, flush=True)
        return root
    if root.exists():
        shutil.rmtree(root)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print("emulated root: building %s with debootstrap (two or three minutes)" % root, flush=True)
    subprocess.run(["debootstrap", "--arch=" + arch, "--variant=minbase", "--include=" + ",".join(packages),
                    SUITE, str(root), debian_mirror()], check=True, stdout=subprocess.DEVNULL)
    (root / "etc" / "cpuinfo.cortex-a53").write_text(CPUINFO)
    (root / ".complete").write_text("%.0f s\n" % (time.monotonic() - started))
    print("emulated root: built in %.0f s" % (time.monotonic() - started), flush=True)
    return root


def fresh_copy(base: Path, work: Path) -> Path:
    """A fresh copy of a built root for one run to install into. cp -a keeps /dev's device nodes
    as nodes (a Python copy would read /dev/zero for ever)."""
    if work.exists():
        shutil.rmtree(work)
    subprocess.run(["cp", "-a", str(base), str(work)], check=True)
    return work


class Mounted:
    """proc, dev (with the host's ptys, for the relay emulator) and the Cortex-A53 cpuinfo."""

    def __init__(self, root: Path, cpuinfo: bool = True) -> None:
        self.root = root
        self.cpuinfo = cpuinfo
        self.points: List[Path] = []

    def __enter__(self):
        mounts = [("proc", "proc", ["-t", "proc"]), ("/dev", "dev", ["--rbind"])]
        if self.cpuinfo:
            mounts.append((str(self.root / "etc/cpuinfo.cortex-a53"), "proc/cpuinfo", ["--bind"]))
        for source, target, options in mounts:
            point = self.root / target
            subprocess.run(["mount"] + options + [source, str(point)], check=True)
            self.points.append(point)
        return self

    def __exit__(self, *exc_info) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", str(point)], check=False)


def in_root(root: Path, command: List[str], timeout: float = 3600, check: bool = True,
            cpu: str = "cortex-a53") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "QEMU_CPU": cpu, "HOME": "/root",
           "LANG": "C.UTF-8"}
    result = subprocess.run(["chroot", str(root)] + command, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit("test-emulated: %s failed (%d):\n%s%s" % (" ".join(command), result.returncode,
                                                                  result.stdout[-3000:], result.stderr[-3000:]))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the RV1126B bundle (make bundle BOARD=rv1126b)")
    parser.add_argument("--demo", type=Path, required=True, help="the demo folder make run made (video, gallery photos)")
    parser.add_argument("--seed", type=Path, required=True, help="the seed samples (gallery photos)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".emulated")
    parser.add_argument("--expect", type=Path, required=True, help="the host's audit JSON lines from make run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    work = fresh_copy(build_root(args.cache), args.cache / "work")
    # ONNX Runtime also reads the CPU lists from sysfs, which a chroot does not have: four cores
    cpus = work / "sys" / "devices" / "system" / "cpu"
    cpus.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpus / name).write_text("0-3\n")
    with tarfile.open(args.bundle) as tar:
        tar.extractall(work / "tmp")
    bundle = next(p for p in (work / "tmp").iterdir() if p.name.startswith("facegate-"))
    for source, target in ((args.demo / "visitors.mp4", "tmp/visitors.mp4"), (args.seed / "gallery", "tmp/gallery")):
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, work / target)
    # the host's demo settings, with every frame of the video on its own clock: emulation is
    # many times slower than a board, and the door must see what it saw on the host
    from appliance.config import set_in_text

    demo = set_in_text((ROOT / "tools" / "demo.toml").read_text(), "camera.every_frame", True)
    demo = set_in_text(demo, "web.enabled", False)  # the service's door serves the page (checked below)
    (work / "tmp" / "demo.toml").write_text(demo)
    from facegate_host.emulator import RelayEmulator

    with Mounted(work):
        emulator = RelayEmulator()
        try:
            version = _install_and_update(work, bundle, args.bundle, emulator)
            board = ["--config", "/etc/facegate/config.toml.new"]  # the bundle's own, beside the site's
            npu = in_root(work, ["facegate", "selftest"] + board + ["--no-relay", "--no-camera"], check=False)
            assert npu.returncode == 1 and "FAIL: backend 'rknnlite' needs Rockchip's NPU runtime librknnrt.so" \
                in npu.stdout, npu.stdout
            print("rknnlite without an NPU: %s" % next(l for l in npu.stdout.splitlines() if "FAIL" in l).strip())
            cpu = ["--backend", "onnxruntime", "--models-dir", "/usr/share/facegate/models"]
            _site_secrets(work)  # the board's config with MQTT on: its self-test checks what MQTT needs too
            keys = in_root(work, ["facegate", "keys", "init"] + board)  # this door's key, as install.sh makes it
            assert "wrote this door's key" in keys.stdout, keys.stdout
            selftest = in_root(work, ["facegate", "selftest"] + board + cpu + ["--no-relay", "--no-camera"])
            assert "mqtt            ok" in selftest.stdout, selftest.stdout
            # the embedder's 8-bit copy measured on the ARM CPU's own integer kernels (in use, or
            # refused for the float model: the line says which, with its figures)
            int8 = next(line for line in selftest.stdout.splitlines() if "8-bit embedder" in line)
            assert "on this CPU (aarch64" in int8 and "cosine with float" in int8, selftest.stdout
            print(selftest.stdout.strip(), flush=True)
            # reader mode's OSDP: libosdp from the bundle, the door's PD and a control panel on a pty
            shutil.copy2(ROOT / "tools" / "osdp-roundtrip", work / "tmp" / "osdp-roundtrip")
            osdp = in_root(work, ["env", "PYTHONPATH=/usr/lib/facegate/current/python", "python3",
                                  "/tmp/osdp-roundtrip"], timeout=600)
            print(osdp.stdout.strip(), flush=True)
            # GPIO lines named chip:line through the bundle's gpiod: it loads, and a chip this root
            # lacks is the one-line error a mistyped chip gives on a board
            gpio = in_root(work, ["env", "PYTHONPATH=/usr/lib/facegate/current/python", "python3", "-c",
                                  "from appliance.panel.wiegand_in import open_edges\n"
                                  "try:\n    open_edges('gpiochip9:20', 'gpiochip9:21')\n"
                                  "except Exception as err:\n    print(err)"])
            assert "cannot watch Wiegand reader lines gpiochip9:20 and gpiochip9:21" in gpio.stdout, gpio.stdout
            print("gpiod from the bundle: %s" % gpio.stdout.strip(), flush=True)
            in_root(work, ["facegate", "enroll", "--from-dir", "/tmp/gallery", "--gallery", "/tmp/gallery.db"] + cpu)
            door = in_root(work, ["facegate", "run", "--config", "/tmp/demo.toml"] + cpu +
                           ["--camera", "/tmp/visitors.mp4", "--relay-port", emulator.path, "--gallery", "/tmp/gallery.db",
                            "--audit", "/tmp/audit.db"], timeout=3600)
        finally:
            in_root(work, ["/etc/init.d/S95facegate", "stop"], check=False)
            emulator.close()
        print(door.stdout.strip().splitlines()[-1], flush=True)
        audit = in_root(work, ["facegate", "audit", "--audit", "/tmp/audit.db", "--json"])
        print("installed and updated on the board's own path: %s" % version)
    decided = [(e["kind"], e["person_name"]) for e in map(json.loads, audit.stdout.splitlines())
               if e["kind"] in ("grant", "deny")]
    expected = [(e["kind"], e["person_name"]) for e in map(json.loads, args.expect.read_text().splitlines())
                if e["kind"] in ("grant", "deny")]
    print("host: %s\narm64: %s" % (expected, decided))
    if sorted(decided, key=str) != sorted(expected, key=str):
        raise SystemExit("test-emulated: the arm64 root decided differently from the host")
    print("test-emulated: passed in %.0f s" % (time.monotonic() - started))
    return 0


def _page_answers(url: str, timeout: float) -> str:
    """The first page the door's web page serves at `url` (a user-less door sends /login to /setup)."""
    import ssl
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=ssl._create_unverified_context(), timeout=30) as answer:
                body = answer.read().decode()
                assert "First start: make the first user" in body, body[:500]
                return "%s answered %d (%s)" % (url, answer.status, answer.url)
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit("test-emulated: the door's web page never answered at %s" % url)
            time.sleep(2.0)  # the page's process is still starting under emulation


def _install_and_update(work: Path, bundle: Path, tarball: Path, emulator) -> str:
    """install.sh's on-board branch, as an installer runs it on a board: the site's config is
    there first (kept), the door's key is made, the self-test gates, the init script starts the
    door; then `facegate update` to a second bundle and `--rollback`, through the init script."""
    from appliance.config import set_in_text
    from facegate_host.bundle import finish

    site = (work / "etc" / "facegate" / "config.toml")
    site.parent.mkdir(parents=True, exist_ok=True)
    # the board's config, with what emulation lacks replaced: no NPU (ONNX Runtime on the CPU),
    # no camera (the demo video, looped), no broker; the relay is the emulator's pseudo-terminal
    text = (bundle / "overlay" / "etc" / "facegate" / "config.toml").read_text()
    for name, value in (("models.backend", "onnxruntime"), ("camera.source", "/tmp/visitors.mp4"),
                        ("camera.loop", True), ("relay.port", emulator.path), ("mqtt.enabled", False),
                        ("door.watchdog_device", ""), ("update.confirm_seconds", 5.0)):
        text = set_in_text(text, name, value)
    site.write_text(text)
    installed = in_root(work, ["sh", "/tmp/%s/install.sh" % bundle.name], timeout=3600)
    print(installed.stdout.strip(), flush=True)
    assert "selftest passed" in installed.stdout, installed.stdout  # the gate (the key: MQTT is off here)
    assert "Starting facegate: OK" in installed.stdout, installed.stdout
    assert "kept the site's /etc/facegate/config.toml" in installed.stdout, installed.stdout
    assert in_root(work, ["/etc/init.d/S95facegate", "status"]).stdout.startswith("facegate is running")
    assert "the web page's certificate /etc/facegate/secrets/web.crt" in installed.stdout, installed.stdout
    page = _page_answers("https://127.0.0.1:8443/login", timeout=300)  # the door's page, from the bundle's bottle
    print("the door's page in the arm64 root: %s" % page, flush=True)
    first = in_root(work, ["facegate", "update", "--status", "--json"])
    first = json.loads(first.stdout)["current"]
    assert emulator.wait_for(lambda e: len(e.events) >= 1, timeout=120), "the door never drove the relay"
    # a second bundle: the same code with one more file, so another version name (its manifest's hash)
    repacked = work / "tmp" / "second"
    with tarfile.open(tarball) as tar:
        tar.extractall(repacked)
    folder = next(repacked.iterdir())
    (folder / "NOTE").write_text("the second bundle of test-emulated\n")
    finish(folder, "rv1126b", work / "tmp" / "second.tar.gz")
    shutil.rmtree(repacked)
    updated = in_root(work, ["facegate", "update", "/tmp/second.tar.gz"], timeout=3600)
    print(updated.stdout.strip(), flush=True)
    state = json.loads(in_root(work, ["facegate", "update", "--status", "--json"]).stdout)
    assert state["state"] == "confirmed" and state["previous"] == first and state["current"] != first, state
    assert in_root(work, ["cat", "/var/run/facegate.status"]).stdout.split() == ["running", state["current"]]
    back = in_root(work, ["facegate", "update", "--rollback"], timeout=600)
    assert first in back.stdout, back.stdout
    assert in_root(work, ["cat", "/var/run/facegate.status"]).stdout.split() == ["running", first]
    stopped = in_root(work, ["/etc/init.d/S95facegate", "stop"])  # the relay is the demo door's next
    assert "Stopping facegate: OK" in stopped.stdout, stopped.stdout
    return "%s, updated to %s and rolled back" % (first, state["current"])


def _site_secrets(work: Path) -> None:
    """What an installer puts on the board for MQTT (the board config names them): the
    administrator's public key, and stand-ins for the site CA, the door's certificate and
    broker password (the self-test checks they are there, not a broker)."""
    import os

    from appliance.config import load
    from appliance.keys import PrivateKey

    mqtt = load(work / "etc" / "facegate" / "config.toml").mqtt
    for path, text, mode in ((mqtt.trusted_keys_file, "admin admin %s\n" % PrivateKey.generate().public.hex, 0o644),
                             (mqtt.ca_file, "the site's CA certificate\n", 0o644),
                             (mqtt.cert_file, "this door's certificate\n", 0o644),
                             (mqtt.key_file, "this door's TLS key\n", 0o600),
                             (mqtt.password_file, "a broker password\n", 0o600)):
        target = work / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chmod(target, mode)


if __name__ == "__main__":
    sys.exit(main())
