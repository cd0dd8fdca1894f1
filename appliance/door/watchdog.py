"""The software side of the hardware watchdog: feed it while the door loop is healthy.

If the service hangs or is killed, the feeding stops and the board resets; at boot the relay
coil is unpowered and the service locks again at start. A clean exit writes the magic 'V' so
a deliberate stop does not reset the board. Under systemd (NOTIFY_SOCKET set) the same feeding
also tells the service manager READY=1 once and WATCHDOG=1 every interval, so a unit with
WatchdogSec restarts a hung door.
"""

import logging
import os
import socket
import time
from typing import Optional

from appliance.errors import ConfigError

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, device: str = "", interval: float = 1.0, notify_socket: Optional[str] = None) -> None:
        self.device = device
        self.interval = interval
        self._last = 0.0
        self._fd: Optional[int] = None
        self._notify: Optional[socket.socket] = None
        self._notify_address = notify_socket
        self._ready_sent = False
        if device:
            try:
                self._fd = os.open(device, os.O_WRONLY)
            except OSError as err:
                raise ConfigError("cannot open watchdog %s: %s (set door.watchdog_device to \"\" to run "
                                  "without one)" % (device, err.strerror or err)) from err
        if notify_socket:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            if notify_socket.startswith("@"):  # an abstract socket name
                self._notify_address = "\0" + notify_socket[1:]

    def _tell_systemd(self, message: bytes) -> None:
        try:
            self._notify.sendto(message, self._notify_address)
        except OSError as err:
            log.error("cannot notify systemd at %s: %s", self._notify_address, err)

    def feed(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval:
            return
        self._last = now
        if self._notify is not None:
            self._tell_systemd(b"WATCHDOG=1" if self._ready_sent else b"READY=1\nWATCHDOG=1")
            self._ready_sent = True
        if self._fd is None:
            return
        try:
            os.write(self._fd, b"1")
        except OSError as err:
            log.error("cannot feed watchdog %s: %s", self.device, err)

    def close(self, deliberate: bool = True) -> None:
        """Let go; `deliberate` disarms the hardware watchdog, otherwise it stays armed and
        resets the board unless a restarted service feeds it in time."""
        if self._notify is not None:
            self._tell_systemd(b"STOPPING=1")
            self._notify.close()
            self._notify = None
        if self._fd is None:
            return
        if deliberate:
            try:
                os.write(self._fd, b"V")  # magic close: this stop is deliberate
            except OSError:
                pass
        os.close(self._fd)
        self._fd = None
