"""Signed messages: an Ed25519 signature over the exact bytes of a JSON envelope.

On the wire a message is one JSON object of fixed layout:

    {"v":2,"key":"<key id, 16 hex>","sig":"<signature, 128 hex>","signed":<envelope JSON>}

The signature covers a context string and the envelope's bytes as sent, so the receiver checks
it before parsing anything: a flood of forged payloads costs one hash each, never a JSON parse.
The envelope names its verb and target (a signed "remove" for one door cannot be replayed as
another verb or onto another door's topic), `issued` bounds its age, `request_id` makes it
idempotent, and `reply_to` says where the answer goes.
"""

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from appliance.errors import CommandError
from appliance.keys import PrivateKey, Trusted

VERSION = 2
CONTEXT = b"FaceGate signed message v2\n"
_LAYOUT = re.compile(rb'\{"v":2,"key":"([0-9a-f]{16})","sig":"([0-9a-f]{128})","signed":')
_PREFIX_BYTES = 178  # the length of every match of _LAYOUT


def canonical(envelope: Dict[str, Any]) -> bytes:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def envelope(verb: str, target: str, body: Dict[str, Any], request_id: Optional[str] = None,
             issued: Optional[float] = None, reply_to: Optional[str] = None) -> Dict[str, Any]:
    fields = {"request_id": request_id or uuid.uuid4().hex, "verb": verb, "target": target,
              "issued": round(time.time() if issued is None else issued, 3), "body": body}
    if reply_to is not None:
        fields["reply_to"] = reply_to
    return fields


def seal(key: PrivateKey, fields: Dict[str, Any]) -> bytes:
    """`fields` signed by `key`, as the bytes to publish."""
    return seal_bytes(key, canonical(fields))


def seal_bytes(key: PrivateKey, signed: bytes) -> bytes:
    signature = key.sign(CONTEXT + signed)
    return b'{"v":2,"key":"%s","sig":"%s","signed":%s}' % (key.key_id.encode(), signature.hex().encode(), signed)


def sign(key: PrivateKey, verb: str, target: str, body: Dict[str, Any], **fields) -> bytes:
    return seal(key, envelope(verb, target, body, **fields))


@dataclass(frozen=True)
class Opened:
    signed: bytes  # the envelope's bytes, not yet parsed
    signer: Trusted


def open_sealed(payload: bytes, lookup: Callable[[str], Optional[Trusted]]) -> Opened:
    """Check the signature; CommandError (unsigned, unknown_key, bad_signature) unless a key that
    `lookup` trusts signed exactly these bytes. Parses nothing."""
    match = _LAYOUT.match(payload)
    if match is None or not payload.endswith(b"}"):
        raise CommandError("unsigned", "not a signed FaceGate message (expected {\"v\":2,\"key\",\"sig\",\"signed\"})")
    key_id = match.group(1).decode("ascii")
    signer = lookup(key_id)
    if signer is None:
        raise CommandError("unknown_key", "signed by key %s, which is not trusted here" % key_id)
    signed = payload[_PREFIX_BYTES:-1]
    if not signer.key.verify(bytes.fromhex(match.group(2).decode("ascii")), CONTEXT + signed):
        raise CommandError("bad_signature", "the signature does not match key %s (%s)" % (key_id, signer.name))
    return Opened(signed, signer)
