"""One door process per gallery and audit trail (and, through the relay's exclusive open, per
relay): two doors on one config would drive one relay against each other and audit every grant
twice. The first holds a lock file beside each; the second refuses to start and names it."""

import datetime
import fcntl
import os
from pathlib import Path
from typing import List

from appliance.errors import ConfigError


class InstanceLock:
    def __init__(self) -> None:
        self._handles: List = []

    def hold(self, path: str, what: str) -> None:
        """Hold `path`.lock for as long as this process runs; ConfigError naming the holder if
        another process holds it."""
        lock_path = Path(str(path) + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError("the %s %s is in use by another FaceGate door (%s): one door process per gallery, "
                              "audit trail and relay; stop that one first" % (what, path, holder)) from None
        handle.seek(0)
        handle.truncate()
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        handle.write("pid %d, running since %s" % (os.getpid(), since))
        handle.flush()
        self._handles.append(handle)

    def release(self) -> None:
        for handle in self._handles:
            handle.close()  # closing drops the lock; the file stays, empty of meaning
        self._handles = []
