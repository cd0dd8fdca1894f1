"""Image files and bytes from outside: checked from their headers before anything is decoded.

One check for every entry (the CLI's photos, a camera folder, photos over MQTT): the format
must be JPEG, PNG, BMP or WebP and the declared sides and pixel count within limits, so a small
file that claims 20000x20000 pixels is refused without allocating 1.2 GB. The decoder's own
warnings (libjpeg, libpng) are kept off the terminal; what went wrong is the one ImageError.
"""

import contextlib
import os
import struct
import sys
import threading
from pathlib import Path
from typing import Iterator, Tuple

import cv2
import numpy as np

from appliance.errors import ImageError

MAX_SIDE = 10000
MAX_PIXELS = 40_000_000  # a 40 MP photo is 120 MB as BGR; nothing at a door needs more
MAX_FILE_BYTES = 64 << 20
MIN_SIDE = 16

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_quiet_lock = threading.Lock()


def probe(data: bytes) -> Tuple[str, int, int]:
    """(format, width, height) read from the header alone; ImageError for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("PNG without a readable header (truncated?)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:2] == b"\xff\xd8":
        return ("jpeg",) + _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return "bmp", width, abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return ("webp",) + _webp_size(data)
    raise ImageError("not a JPEG, PNG, BMP or WebP image")


def _jpeg_size(data: bytes) -> Tuple[int, int]:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if marker in _SOF_MARKERS:
            if position + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height
        if length < 2:
            break
        position += 2 + length
    raise ImageError("JPEG without a readable frame header (truncated or damaged)")


def _webp_size(data: bytes) -> Tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise ImageError("WebP without a readable header")


def check_size(width: int, height: int, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> None:
    if not (MIN_SIDE <= width <= max_side and MIN_SIDE <= height <= max_side):
        raise ImageError("image is %dx%d pixels; sides must be %d to %d" % (width, height, MIN_SIDE, max_side))
    if width * height > max_pixels:
        raise ImageError("image is %dx%d = %.0f megapixels; the limit is %.0f"
                         % (width, height, width * height / 1e6, max_pixels / 1e6))


@contextlib.contextmanager
def _decoder_quiet() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while a codec runs: libjpeg and libpng write their
    warnings there directly, past Python's logging, ahead of our own one-line error."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with _quiet_lock:
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def decode(data: bytes, name: str = "image", max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS,
           quiet: bool = True) -> np.ndarray:
    """BGR pixels of an image in memory, after the header check; ImageError naming `name`."""
    try:
        _, width, height = probe(data)
    except ImageError as err:
        raise ImageError("%s is not a readable image: %s" % (name, err)) from None
    try:
        check_size(width, height, max_side, max_pixels)
    except ImageError as err:
        raise ImageError("%s refused: %s" % (name, err)) from None
    buffer = np.frombuffer(data, np.uint8)
    try:
        with _decoder_quiet() if quiet else contextlib.nullcontext():
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ImageError("%s is not a readable image: %s" % (name, str(err).strip().splitlines()[-1])) from None
    # a phone's portrait photo is stored sideways with an EXIF orientation, which the decoder
    # applies: its pixels come out turned upright, width and height swapped
    if image is None or image.shape[:2] not in ((height, width), (width, height)):
        raise ImageError("%s is not a readable image (corrupt or truncated)" % name)
    return image


def read(path, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS, quiet: bool = True) -> np.ndarray:
    """An image file as BGR pixels, or ImageError saying what is wrong with it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError("%s is %d MB; image files are limited to %d MB" % (path, size >> 20, MAX_FILE_BYTES >> 20))
        data = path.read_bytes()
    except OSError as err:
        raise ImageError("cannot read %s: %s" % (path, err.strerror or err)) from err
    if not data:
        raise ImageError("%s is empty" % path)
    return decode(data, str(path), max_side, max_pixels, quiet)

