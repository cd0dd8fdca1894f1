"""Defensive parsing of what arrives from the network: size, JSON shape, photos.

Photos are checked from their headers (format and dimensions) before they are decoded, so a
small file that claims to be 60000x60000 pixels is refused without allocating the image.
"""

import base64
import binascii
import json
import struct
from typing import Any, Dict, Tuple

import cv2
import numpy as np

from appliance.errors import CommandError

_TYPES = {"request_id": str, "verb": str, "target": str, "issued": (int, float), "body": dict}


def parse_envelope(payload: bytes, max_bytes: int) -> Dict[str, Any]:
    if len(payload) > max_bytes:
        raise CommandError("too_large", "command of %d bytes exceeds the limit of %d" % (len(payload), max_bytes))
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CommandError("malformed", "not UTF-8 JSON: %s" % err) from None
    if not isinstance(envelope, dict):
        raise CommandError("malformed", "the command must be a JSON object")
    for key, kind in _TYPES.items():
        if not isinstance(envelope.get(key), kind) or isinstance(envelope.get(key), bool):
            raise CommandError("malformed", "field %r is missing or of the wrong type" % key)
    if not envelope["request_id"] or len(envelope["request_id"]) > 100:
        raise CommandError("malformed", "request_id must be 1 to 100 characters")
    return envelope


def image_size(data: bytes) -> Tuple[str, int, int]:
    """(format, width, height) from a PNG or JPEG header; CommandError for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:2] == b"\xff\xd8":
        position = 2
        while position + 9 < len(data):
            if data[position] != 0xFF:
                break
            marker = data[position + 1]
            length = struct.unpack(">H", data[position + 2:position + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                height, width = struct.unpack(">HH", data[position + 5:position + 9])
                return "jpeg", width, height
            position += 2 + length
        raise CommandError("bad_image", "JPEG without a readable frame header")
    raise CommandError("bad_image", "photos must be JPEG or PNG")


def decode_photo(text: Any, max_side: int, max_bytes: int) -> np.ndarray:
    if not isinstance(text, str):
        raise CommandError("malformed", "a photo must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("bad_image", "a photo is not valid base64") from None
    if len(data) > max_bytes:
        raise CommandError("too_large", "a photo of %d bytes exceeds the limit" % len(data))
    _, width, height = image_size(data)
    if not (16 <= width <= max_side and 16 <= height <= max_side):
        raise CommandError("bad_image", "photo is %dx%d; sides must be 16 to %d pixels" % (width, height, max_side))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape[1] != width or image.shape[0] != height:
        raise CommandError("bad_image", "a photo could not be decoded (corrupt or truncated)")
    return image


def encode_photo(path) -> str:
    with open(path, "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")
