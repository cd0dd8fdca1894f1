"""The software side of the hardware watchdog: feed it while the door loop is healthy.

If the service hangs or is killed, the feeding stops and the board resets; at boot the relay
coil is unpowered and the service locks again at start. A clean exit writes the magic 'V' so
a deliberate stop does not reset the board.
"""

import logging
import os
import time
from typing import Optional

from appliance.errors import ConfigError

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, device: str, interval: float = 1.0) -> None:
        self.device = device
        self.interval = interval
        self._last = 0.0
        try:
            self._fd: Optional[int] = os.open(device, os.O_WRONLY)
        except OSError as err:
            raise ConfigError("cannot open watchdog %s: %s (set door.watchdog_device to \"\" to run "
                              "without one)" % (device, err.strerror or err)) from err

    def feed(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        if self._fd is None or now - self._last < self.interval:
            return
        try:
            os.write(self._fd, b"1")
            self._last = now
        except OSError as err:
            log.error("cannot feed watchdog %s: %s", self.device, err)

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, b"V")  # magic close: this stop is deliberate
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
