"""Who may say what: Ed25519 key pairs, and the public keys a machine trusts.

The administrator signs commands with a private key that never leaves the administrator's
machine; a door holds only the public half, so a stolen door cannot sign anything for another
door. Each door has a key pair of its own for what it sends (replies, sync requests), made on
the door; the administrator keeps the doors' public halves and can revoke one.

Private keys are PKCS#8 PEM files readable by their owner only. Trusted keys are a text file,
one `ROLE NAME PUBLIC-KEY-HEX` per line (role `admin`, `door` or `revoked`), '#' comments.
"""

import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from appliance.errors import ConfigError

ROLES = ("admin", "door", "revoked")
_NAME = re.compile(r"[^\s/+#\x00-\x1f\x7f]([^/+#\x00-\x1f\x7f]{0,62}[^\s/+#\x00-\x1f\x7f])?")  # a topic level
_LEGACY_HEX = re.compile(r"[0-9a-fA-F]{32,}")


def _crypto():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:  # the board image lacks it
        raise ConfigError("signed commands need the Python package 'cryptography' (Debian: python3-cryptography; "
                          "pip install cryptography)") from err
    return ed25519


def read_secret_file(path: str, what: str) -> bytes:
    """A secret from a file that only its owner can read; refuses looser permissions."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        data = file.read_bytes()
    except OSError as err:
        raise ConfigError("cannot read %s %s: %s" % (what, path, err.strerror or err)) from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("%s %s is readable by others (mode %o): chmod 600 %s"
                          % (what, path, stat.S_IMODE(mode), path))
    return data.strip()


class PublicKey:
    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ConfigError("an Ed25519 public key is 32 bytes (64 hex digits), got %d bytes" % len(raw))
        self.raw = raw
        self._key = _crypto().Ed25519PublicKey.from_public_bytes(raw)
        # names the key in messages and audit events; 16 hex digits of its hash, never the key
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def from_hex(cls, text: str) -> "PublicKey":
        try:
            return cls(bytes.fromhex(text.strip()))
        except ValueError as err:
            raise ConfigError("%r is not a public key in hex" % text[:80]) from err

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, data)
            return True
        except InvalidSignature:
            return False


class PrivateKey:
    def __init__(self, key) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(raw)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @classmethod
    def generate(cls) -> "PrivateKey":
        return cls(_crypto().Ed25519PrivateKey.generate())

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())


def is_legacy_key(data: bytes) -> bool:
    """The shared HMAC site key of FaceGate before per-door keys: hex text, no PEM armour."""
    return _LEGACY_HEX.fullmatch(data.decode("ascii", "replace").strip()) is not None


def load_private(path: str, what: str = "mqtt.signing_key_file") -> PrivateKey:
    if not path:
        raise ConfigError("%s is empty: make this machine's key with 'facegate keys init' (a door) or "
                          "'facegate admin keygen FILE' (the administrator)" % what)
    data = read_secret_file(path, what)
    if is_legacy_key(data):
        raise ConfigError("%s %s holds the old shared site key, which signs for every door: run "
                          "'facegate keys init --config ...' to replace it with this machine's own key "
                          "(README: moving a site to per-door keys)" % (what, path))
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError("%s %s is not a PEM private key (%s): make one with 'facegate keys init'"
                          % (what, path, err)) from err
    if not isinstance(key, _crypto().Ed25519PrivateKey):
        raise ConfigError("%s %s is not an Ed25519 key" % (what, path))
    return PrivateKey(key)


def write_private(path: str, key: PrivateKey, replace: bool = False) -> None:
    """Write `key` with mode 600; never overwrites unless `replace` (then atomically)."""
    target = Path(path)
    if not replace:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key.pem())
            handle.flush()
            os.fsync(handle.fileno())
        return
    descriptor, temporary = tempfile.mkstemp(dir=str(target.parent), prefix=".key-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key.pem())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Trusted:
    role: str
    name: str
    key: PublicKey

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def line(self) -> str:
        return "%s %s %s" % (self.role, self.name, self.key.hex)


def valid_name(name: str) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


class TrustedKeys:
    """The public keys one machine trusts, by key id."""

    def __init__(self, entries: List[Trusted], path: str = "", stamp: Optional[float] = None) -> None:
        self.entries = entries
        self.path = path
        self.stamp = stamp  # the file's modification time when read
        # a key revoked anywhere in the file stays revoked, whatever line trusts it
        self._by_id: Dict[str, Trusted] = {e.key_id: e for e in entries}
        self._by_id.update({e.key_id: e for e in entries if e.role == "revoked"})

    @classmethod
    def load(cls, path: str, what: str = "mqtt.trusted_keys_file", missing_ok: bool = False) -> "TrustedKeys":
        if not path:
            raise ConfigError("%s is empty: give the file of public keys this machine trusts "
                              "(a door: the administrator's, from 'facegate admin keygen')" % what)
        if missing_ok and not Path(path).exists():
            return cls([], path)
        try:
            stamp = Path(path).stat().st_mtime_ns
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError("cannot read %s %s: %s" % (what, path, err.strerror or err)) from err
        entries = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            role, _, rest = line.partition(" ")
            name, _, key = rest.strip().rpartition(" ")
            parts = [role, name.strip(), key]
            if parts[0] not in ROLES or not valid_name(parts[1]):
                raise ConfigError("%s line %d: expected 'ROLE NAME PUBLIC-KEY-HEX' with ROLE one of %s, got %r"
                                  % (path, number, ", ".join(ROLES), raw[:120]))
            try:
                entries.append(Trusted(parts[0], parts[1], PublicKey.from_hex(parts[2])))
            except ConfigError as err:
                raise ConfigError("%s line %d: %s" % (path, number, err)) from err
        return cls(entries, path, stamp)

    def fresh(self) -> "TrustedKeys":
        """This set, or the file read again if it changed since (a door added or revoked while a
        long-running `admin serve` runs); a file that became unreadable keeps the old set."""
        try:
            stamp = Path(self.path).stat().st_mtime_ns if self.path else None
        except OSError:
            stamp = None
        if stamp is None or stamp == self.stamp:
            return self
        try:
            return TrustedKeys.load(self.path)
        except ConfigError:
            return self

    def find(self, key_id: str, role: str) -> Optional[Trusted]:
        entry = self._by_id.get(key_id)
        return entry if entry is not None and entry.role == role else None

    def named(self, name: str) -> List[Trusted]:
        return [e for e in self.entries if e.name == name]

    def of_role(self, role: str) -> List[Trusted]:
        return [e for e in self.entries if e.role == role]

    def revoked(self, key_id: str) -> Optional[Trusted]:
        entry = self._by_id.get(key_id)
        return entry if entry is not None and entry.role == "revoked" else None

    def with_entry(self, entry: Trusted) -> "TrustedKeys":
        """A copy in which `entry` replaces the trusted keys of the same name. Revoked lines stay:
        a door given a new key after a theft must not bring its stolen key back; and a revoked key
        is refused under any name (ConfigError)."""
        revoked = self.revoked(entry.key_id)
        if entry.role != "revoked" and revoked is not None:
            raise ConfigError("key %s was revoked (door %s) and is never trusted again, under any name"
                              % (entry.key_id, revoked.name))
        kept = [e for e in self.entries if e.name != entry.name or (e.role == "revoked" and e.key_id != entry.key_id)]
        return TrustedKeys(kept + [entry], self.path)

    def save(self) -> None:
        """Atomically, so a crash leaves the old file or the new one."""
        target = Path(self.path)
        text = "# ROLE NAME PUBLIC-KEY (FaceGate trusted keys; 'revoked' is never trusted again)\n" + \
            "".join(e.line() + "\n" for e in self.entries)
        descriptor, temporary = tempfile.mkstemp(dir=str(target.parent.resolve()), prefix=".trusted-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
