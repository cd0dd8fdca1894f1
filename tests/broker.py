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
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = Path(folder)
        self.config = self.folder / "mosquitto.conf"
        # persistence keeps sessions and queued QoS 1 messages across a restart, as on a site broker
        # run as ourselves: as root mosquitto would switch to its own user, who cannot write here
        self.config.write_text("user %s\n" % getpass.getuser() +
                               "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
                               "persistence_location %s/\nmax_queued_messages 100000\n"
                               "log_dest file %s/mosquitto.log\n" % (self.port, self.folder, self.folder))
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
