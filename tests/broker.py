"""A real mosquitto on loopback for tests and benchmarks: free port, persistence, stop and restart."""

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise RuntimeError("mosquitto is not installed: run 'make system-deps' (Debian package mosquitto)")
    return found


class Broker:
    def __init__(self, folder: Path, tls: dict = None, rules: Path = None) -> None:
        """`rules`: a folder from `facegate admin broker-rules` (passwd and acl): anonymous clients
        are refused and every account is held to its rules."""
        self.port = free_port()
        self.folder = Path(folder)
        self.config = self.folder / "mosquitto.conf"
        # with tls (from make_certificates): TLS only, and a client certificate is required
        tls_lines = ("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n"
                     % (tls["ca.crt"], tls["broker.crt"], tls["broker.key"])) if tls else ""
        # persistence keeps sessions and queued QoS 1 messages across a restart, as on a site broker
        # run as ourselves: as root mosquitto would switch to its own user, who cannot write here
        self.config.write_text("user %s\n" % getpass.getuser() +
                               "listener %d 127.0.0.1\nallow_anonymous %s\npersistence true\n"
                               "persistence_location %s/\nmax_queued_messages 100000\n"
                               "log_dest file %s/mosquitto.log\n"
                               % (self.port, "false" if rules else "true", self.folder, self.folder)
                               + tls_lines
                               + ("password_file %s/passwd\nacl_file %s/acl\n" % (rules, rules) if rules else ""))
        self.process = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start on port %d" % self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.process.wait(timeout=10)
        self.process = None


def make_certificates(folder: Path) -> dict:
    """A throwaway CA, a broker certificate for 127.0.0.1 and a door's client certificate (openssl)."""
    folder = Path(folder)

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=facegate test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    for name, extra in (("broker", "subjectAltName=IP:127.0.0.1"), ("door", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name, "-keyout", name + ".key",
                "-out", name + ".csr")
        (folder / (name + ".ext")).write_text(extra + "\n")
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", name + ".ext", "-out", name + ".crt")
        (folder / (name + ".key")).chmod(0o600)
    return {name: str(folder / name) for name in ("ca.crt", "broker.crt", "broker.key", "door.crt", "door.key")}
