"""Warnings that a flood cannot multiply: the first of a kind is logged at once, later ones at
most once a minute with how many were held back, so a board's small syslog keeps its history."""

import logging
import threading
import time
from typing import Dict, Tuple


class Throttle:
    def __init__(self, logger: logging.Logger, seconds: float = 60.0) -> None:
        self.logger = logger
        self.seconds = seconds
        self._lock = threading.Lock()
        self._kinds: Dict[str, Tuple[float, int]] = {}  # kind -> (when it may speak again, held back)

    def warning(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            until, held = self._kinds.get(kind, (0.0, 0))
            if now < until:
                self._kinds[kind] = (until, held + 1)
                return
            self._kinds[kind] = (now + self.seconds, 0)
        if held:
            message += " (and %d more like it in the last %.0f s)" % (held, self.seconds)
        self.logger.warning(message, *args)


class Budget:
    """At most `rate` a second with bursts of `burst`: how many replies a stranger can draw."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True
