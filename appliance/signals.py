"""Every signal that would end a FaceGate process and that Python can catch.

Left to their default, SIGHUP, SIGQUIT, SIGUSR1 and the rest end the process at once, with no
Python code run: a door unlocked at that moment would stay unlocked. Each FaceGate process that
can drive a relay hands them all to one function that locks first (SIGKILL and power loss are
covered by the relay's own default and the lock at the next start).
"""

import contextlib
import logging
import signal
import threading
from typing import Callable

log = logging.getLogger(__name__)

# SIGABRT, SIGTRAP and SIGSYS too: sent by another process (kill -ABRT, a seccomp filter's
# SIGSYS) they reach this handler like the rest. An abort() inside a C extension re-raises
# SIGABRT with its default action once the handler returns, before any Python runs: that death,
# like SIGKILL's, is left to the relay's default and the lock at the next start.
_NAMES = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF",
          "SIGXCPU", "SIGXFSZ", "SIGPWR", "SIGIO", "SIGPOLL", "SIGSTKFLT", "SIGABRT", "SIGTRAP", "SIGSYS")
TERMINATING = tuple(sorted({getattr(signal, name) for name in _NAMES if hasattr(signal, name)}))


class Stopped(Exception):
    """Raised in the main thread by `raise_on_terminating`'s handler."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_terminating(callback: Callable[[int], None]) -> None:
    """Call `callback(signum)` for every terminating signal, with a log line naming it."""
    def handler(signum, frame) -> None:
        log.warning("stopping on %s: locking the door first", signal.Signals(signum).name)
        callback(signum)

    for signum in TERMINATING:
        signal.signal(signum, handler)


def raise_on_terminating() -> None:
    """Turn every terminating signal into `Stopped` in the main thread (so `finally` runs)."""
    def handler(signum, frame) -> None:
        raise Stopped(signum)

    for signum in TERMINATING:
        signal.signal(signum, handler)


@contextlib.contextmanager
def interrupt_after():
    """Ctrl-C during the block takes effect when it ends: what the block commits (an enrolment)
    is then also what it reports. Only the main thread receives SIGINT, so only it needs this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
