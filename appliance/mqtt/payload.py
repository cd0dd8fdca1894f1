"""Defensive parsing of what arrives from the network: size, JSON shape, numbers, text, photos.

Everything a command carries is checked once here, before any of it is used: JSON with finite
numbers of a sane size only (Python's json takes NaN, Infinity and 10**400, which defeat the
age check or overflow later), at most a few levels deep, text that is valid Unicode without
control characters in identifiers. Photos are checked from their headers before decoding.
"""

import base64
import binascii
import json
import math
from typing import Any, Dict

import numpy as np

from appliance.errors import CommandError, ImageError
from appliance.mqtt.topics import ALL, base, is_safe_request_id
from appliance.vision import images

_TYPES = {"request_id": str, "verb": str, "target": str, "issued": (int, float), "body": dict}
MAX_DEPTH = 8  # envelope > body > photos/changes > change > body > embeddings > list: 7
MAX_ISSUED = 1e11  # seconds since 1970: year 5138


class _Refused(ValueError):
    pass


def _reject_constant(name: str):
    raise _Refused("%s is not a number FaceGate accepts" % name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("number %s is out of range" % text[:20])
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 17:  # no count, id or time FaceGate uses needs more digits
        raise _Refused("integer %s... is out of range" % text[:20])
    return int(text)


def _check_tree(value: Any, depth: int = 0) -> None:
    """Depth, and text that can be encoded again (a lone surrogate cannot)."""
    if depth > MAX_DEPTH:
        raise _Refused("nested more than %d levels" % MAX_DEPTH)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused("a string holds an unpaired surrogate (\\ud800-\\udfff)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_tree(key, depth + 1)
            _check_tree(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1)


def parse_json(payload: bytes) -> Any:
    """JSON from the network with finite, bounded numbers and clean text; CommandError otherwise."""
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant,
                           parse_float=_finite_float, parse_int=_bounded_int)
        _check_tree(value)
    except _Refused as err:
        raise CommandError("malformed", str(err)) from None
    except RecursionError:
        raise CommandError("malformed", "nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise CommandError("malformed", "not UTF-8 JSON: %s" % err) from None
    return value


def check_size(payload: bytes, max_bytes: int) -> None:
    if len(payload) > max_bytes:
        raise CommandError("too_large", "message of %d bytes exceeds the limit of %d" % (len(payload), max_bytes))


def parse_envelope(signed: bytes) -> Dict[str, Any]:
    """The fields of a signed envelope (its signature already checked), each of its type."""
    envelope = parse_json(signed)
    if not isinstance(envelope, dict):
        raise CommandError("malformed", "the command must be a JSON object")
    for key, kind in _TYPES.items():
        if not isinstance(envelope.get(key), kind) or isinstance(envelope.get(key), bool):
            raise CommandError("malformed", "field %r is missing or of the wrong type" % key)
    if not is_safe_request_id(envelope["request_id"]):
        raise CommandError("malformed", "request_id must be 1 to 100 letters, digits or . _ : -")
    if not 0 < envelope["issued"] < MAX_ISSUED:
        raise CommandError("malformed", "issued must be a time in seconds since 1970")
    if "reply_to" in envelope and not isinstance(envelope["reply_to"], str):
        raise CommandError("malformed", "reply_to must be a topic")
    return envelope


def plain_text(value: Any) -> bool:
    """Text without control characters: safe in a log line, a table or a file name."""
    return isinstance(value, str) and not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value)


def decode_photo(text: Any, max_side: int, max_bytes: int) -> np.ndarray:
    if not isinstance(text, str):
        raise CommandError("malformed", "a photo must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("bad_image", "a photo is not valid base64") from None
    if len(data) > max_bytes:
        raise CommandError("too_large", "a photo of %d bytes exceeds the limit" % len(data))
    if not data.startswith((b"\xff\xd8", b"\x89PNG")):
        raise CommandError("bad_image", "photos must be JPEG or PNG")
    try:
        return images.decode(data, "photo", max_side=max_side, quiet=False)
    except ImageError as err:
        raise CommandError("bad_image", str(err)) from None


def encode_photo(path) -> str:
    with open(path, "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")


def text_field(body: Dict[str, Any], key: str, required: bool = True):
    """A name, id, date or reason from a command body: plain text of 1-200 characters."""
    value = body.get(key)
    if value is None and not required:
        return None
    if not plain_text(value) or not value.strip() or len(value) > 200:
        raise CommandError("malformed", "%s must be a non-empty string of at most 200 characters, "
                           "without control characters" % key)
    return value


def whole_number(body: Dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CommandError("malformed", "%s must be a whole number from %d to %d" % (key, low, high))
    return value


def check_topic(topic: str, envelope: Dict[str, Any], site: str, device: str) -> None:
    """A signed command counts only on the topic it was signed for: its verb, and this door or
    the whole site as its target."""
    prefix, _, verb = topic.rpartition("/cmd/")
    if verb != envelope["verb"]:
        raise CommandError("wrong_topic", "signed for verb %r, arrived on %s" % (envelope["verb"], topic))
    target = envelope["target"]
    if (prefix, target) in ((base(site, device), device), (base(site, ALL), ALL)):
        return
    raise CommandError("wrong_target", "signed for %r, arrived on %s" % (target, topic))


# answers that change nothing; still signed, fresh and answered once, but their replies are not kept
READ_VERBS = ("ping", "status", "list", "get", "events", "snapshot")


def max_age(verb: str, mqtt) -> float:
    if verb == "unlock":
        return mqtt.unlock_max_age_seconds
    if verb in READ_VERBS:
        return mqtt.read_max_age_seconds
    return mqtt.change_max_age_hours * 3600


def check_age(envelope: Dict[str, Any], mqtt, now: float, newest_issued: float = 0.0,
              synchronised: bool = True) -> None:
    """Not from the future beyond the clock skew; an unlock within seconds, a read within a minute,
    a change within hours. Also measured against the newest command already applied, which no
    clock on this door can move: a command that old is refused even if the clock went back.
    With an unsynchronised clock (`now` then comes from clock.TrustedTime) nothing is refused as
    from the future: this door's clock is the one that is wrong."""
    age = now - float(envelope["issued"])
    if age < -mqtt.clock_skew_seconds and synchronised:
        raise CommandError("from_future", "issued %.0f s in the future: check the clocks" % -age)
    limit = max_age(envelope["verb"], mqtt)
    if age > limit:
        raise CommandError("expired", "issued %.1f s ago, the limit for %s is %.0f s" % (age, envelope["verb"], limit))
    behind = newest_issued - float(envelope["issued"])
    if behind > limit:
        raise CommandError("expired", "issued %.1f s before a command already applied; the limit for %s is %.0f s"
                           % (behind, envelope["verb"], limit))
