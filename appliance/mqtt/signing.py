"""Signed commands: HMAC-SHA256 with the site key over a canonical JSON envelope.

The envelope names its verb and target, so a signed "remove" for one door cannot be replayed
as another verb or onto another door's topic; `issued` bounds its age; `request_id` makes it
idempotent. The key file must be readable by its owner only.
"""

import hashlib
import hmac
import json
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from appliance.errors import CommandError, ConfigError

ENVELOPE_KEYS = {"request_id", "verb", "target", "issued", "body", "signature"}


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


def load_site_key(path: str) -> bytes:
    if not path:
        raise ConfigError("mqtt.signing_key_file is empty: every command is signed with the site key "
                          "(make one with 'facegate admin keygen FILE')")
    text = read_secret_file(path, "signing key")
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError("signing key %s must be hex (as 'facegate admin keygen' writes it)" % path) from err
    if len(key) < 16:
        raise ConfigError("signing key %s is too short: at least 16 bytes (32 hex digits)" % path)
    return key


def write_new_key(path: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(os.urandom(32).hex() + "\n")


def canonical(envelope: Dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in envelope.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(key: bytes, verb: str, target: str, body: Dict[str, Any], request_id: Optional[str] = None,
         issued: Optional[float] = None) -> Dict[str, Any]:
    envelope = {"request_id": request_id or uuid.uuid4().hex, "verb": verb, "target": target,
                "issued": round(time.time() if issued is None else issued, 3), "body": body}
    envelope["signature"] = hmac.new(key, canonical(envelope), hashlib.sha256).hexdigest()
    return envelope


def verify(key: bytes, envelope: Dict[str, Any]) -> None:
    """Raise CommandError (unsigned, bad_signature) unless the envelope is signed with `key`."""
    signature = envelope.get("signature")
    if not isinstance(signature, str) or not signature:
        raise CommandError("unsigned", "the command carries no signature")
    expected = hmac.new(key, canonical(envelope), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise CommandError("bad_signature", "the signature does not match the site key")
