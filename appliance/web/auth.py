"""Who may use the door's page: users with scrypt hashes, sessions, CSRF tokens, login throttling.

scrypt (memory-hard, in Python's standard library) at N=2^14, r=8: 16 MB and about 50 ms per
try on a host, so a stolen users file costs an attacker the same per guess. A session is a
random token in a cookie; the server keeps what it means, so logging out or restarting the page
ends it. There is no default password: the first user is made from the shell, or at the page
with the one-time setup code the page prints where only the installer can read it.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from appliance.errors import FaceGateError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
MIN_PASSWORD = 10  # a door's page faces the building's network


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (SCRYPT_N, SCRYPT_R, SCRYPT_P, base64.b64encode(salt).decode(),
                                      base64.b64encode(digest).decode())


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        found = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                               dklen=32, maxmem=1 << 26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, base64.b64decode(digest))


def password_problem(user: str, password: str) -> Optional[str]:
    if not user or not user.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(user) > 32:
        return "a user name is 1-32 letters, digits, '-', '_' or '.'"
    if len(password) < MIN_PASSWORD:
        return "a password has at least %d characters" % MIN_PASSWORD
    if password.lower() in (user.lower(), "facegate", "password12", "1234567890"):
        return "that password is too easy to guess"
    return None


class Users:
    """The users file: {"users": {name: {"hash": ...}}}, written whole and atomically, 0600."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _load(self) -> Dict[str, Dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            return dict(json.loads(self.path.read_text()).get("users", {}))
        except (ValueError, OSError, AttributeError) as err:
            raise FaceGateError("cannot read the web page's users file %s: %s (set a password again: "
                                "'facegate web passwd USER')" % (self.path, err)) from err

    def names(self):
        return sorted(self._load())

    def any(self) -> bool:
        return bool(self._load())

    def check(self, user: str, password: str) -> bool:
        stored = self._load().get(user)
        if stored is None:
            check_password(password, _DUMMY_HASH)  # the same time as a wrong password: names stay private
            return False
        return check_password(password, stored.get("hash", ""))

    def set(self, user: str, password: str) -> None:
        problem = password_problem(user, password)
        if problem:
            raise FaceGateError(problem)
        users = self._load()
        users[user] = {"hash": hash_password(password), "changed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        fd = os.open(str(partial), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"users": users}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)


_DUMMY_HASH = hash_password(secrets.token_hex(8))


@dataclass
class Session:
    user: str
    address: str
    csrf: str
    last: float = field(default_factory=time.monotonic)


class Sessions:
    def __init__(self, idle_seconds: float, limit: int = 64) -> None:
        self.idle_seconds = idle_seconds
        self.limit = limit  # a flood of logins cannot grow the page's memory
        self._sessions: Dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, user: str, address: str) -> Tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, address, secrets.token_urlsafe(24))
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.limit:
                oldest = min(self._sessions, key=lambda key: self._sessions[key].last)
                del self._sessions[oldest]
            self._sessions[token] = session
        return token, session

    def get(self, token: Optional[str]) -> Optional[Session]:
        if not token:
            return None
        with self._lock:
            self._expire()
            session = self._sessions.get(token)
            if session is not None:
                session.last = time.monotonic()
            return session

    def end(self, token: Optional[str]) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [key for key, s in self._sessions.items() if now - s.last > self.idle_seconds]:
            del self._sessions[key]


class Throttle:
    """Wrong passwords in a row, per user name and per address; at `attempts` the key is locked
    out for `lockout_seconds`, during which even the right password is refused."""

    def __init__(self, attempts: int, lockout_seconds: float, limit: int = 4096) -> None:
        self.attempts = attempts
        self.lockout_seconds = lockout_seconds
        self.limit = limit
        self._failures: Dict[str, Tuple[int, float]] = {}  # key -> (count, locked until)
        self._lock = threading.Lock()

    def locked(self, *keys: str) -> float:
        """Seconds left of the longest lockout among `keys` (0: none)."""
        now = time.monotonic()
        with self._lock:
            return max([self._failures.get(key, (0, 0.0))[1] - now for key in keys] + [0.0])

    def failed(self, *keys: str) -> bool:
        """Count a wrong password; True when it started a lockout."""
        now = time.monotonic()
        started = False
        with self._lock:
            if len(self._failures) >= self.limit:  # a spray of names cannot grow the table without end
                self._failures = {k: v for k, v in self._failures.items() if v[1] > now}
            for key in keys:
                count, until = self._failures.get(key, (0, 0.0))
                count += 1
                if count >= self.attempts:
                    until, count, started = now + self.lockout_seconds, 0, True
                self._failures[key] = (count, until)
        return started

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def setup_code(path: Path) -> str:
    """The one-time code for making the first user at the page (made when missing), in a file
    only the door's user can read."""
    try:
        code = path.read_text().strip()
        if code:
            return code
    except OSError:
        pass
    code = "-".join(secrets.token_hex(3) for _ in range(3))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(code + "\n")
    return code
