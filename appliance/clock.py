"""Whether this machine's clock can be trusted, and what to use when it cannot.

Signed commands expire by the clock, TLS certificates have validity dates and schedules are
local time, yet many boards start in 1970 without a network. The kernel knows whether an NTP
daemon (chrony, systemd-timesyncd, BusyBox ntpd) has synchronised it: adjtimex(2) answers
TIME_ERROR while it has not. Reading it needs no privilege and no daemon of ours.
"""

import ctypes
import ctypes.util
import functools
import time
from typing import Optional

TIME_ERROR = 5  # adjtimex: the clock is not synchronised


@functools.lru_cache(maxsize=1)
def _adjtimex():
    """libc's adjtimex, found once: find_library may run a program, and the status asks often."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def synchronised() -> Optional[bool]:
    """True when the kernel says an NTP daemon keeps the clock, False when it says not, None
    when this system cannot tell (not Linux)."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    buffer = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes 0 reads only
    state = adjtimex(buffer)
    if state < 0:
        return None
    return state != TIME_ERROR


class TrustedTime:
    """Now, as far as this door can know it: the wall clock when it is synchronised; otherwise
    never earlier than the newest signed time a command carried, moved on by this process's
    monotonic clock (a board back in 1970 must not refuse the administrator's commands as from
    the future, nor take an old one as fresh)."""

    def __init__(self, newest_signed) -> None:
        self._newest_signed = newest_signed  # a callable: the newest `issued` a command carried
        self._seen = (0.0, time.monotonic())

    def synchronised(self) -> Optional[bool]:
        return synchronised()

    def now(self) -> float:
        wall = time.time()
        if self.synchronised() is not False:
            return wall
        newest = self._newest_signed()
        if newest != self._seen[0]:
            self._seen = (newest, time.monotonic())
        floor = self._seen[0] + (time.monotonic() - self._seen[1]) if self._seen[0] else 0.0
        return max(wall, floor)
