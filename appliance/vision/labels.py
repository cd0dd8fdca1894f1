"""Names drawn on images in any script: OpenCV's own fonts have ASCII only.

Text is drawn with FreeType through Pillow, in the first installed font that has a glyph for
every character of it (Latin, Greek and Cyrillic from DejaVu; Chinese, Japanese and Korean from
WenQuanYi or Noto CJK; `make system-deps` installs both). $FACEGATE_FONTS (paths separated by
':') comes first. Without Pillow or a font that covers the text, the caller's ASCII stand-in is
drawn instead, as before.
"""

import functools
import importlib.util
import os
from typing import Optional, Tuple

import cv2
import numpy as np

FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
              "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
              "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
              "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")
_MISSING = "\U0010FFFD"  # a private-use character no font draws: its glyph is the "no glyph" box


def font_files() -> Tuple[str, ...]:
    extra = tuple(p for p in os.environ.get("FACEGATE_FONTS", "").split(":") if p)
    return tuple(p for p in extra + FONT_FILES if os.path.isfile(p))


@functools.lru_cache(maxsize=16)
def _font(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=4096)
def _has_glyph(path: str, size: int, char: str) -> bool:
    if char.isspace():
        return True
    font = _font(path, size)
    drawn, missing = font.getmask(char), font.getmask(_MISSING)
    return drawn.size != missing.size or bytes(drawn) != bytes(missing)


def font_for(text: str, size: int = 18) -> Optional[str]:
    """The first installed font with a glyph for every character of `text`, or None."""
    if importlib.util.find_spec("PIL") is None:
        return None
    for path in font_files():
        if all(_has_glyph(path, size, char) for char in text):
            return path
    return None


def draw_label(image: np.ndarray, text: str, origin: Tuple[int, int], colour: Tuple[int, int, int],
               fallback: str, size: int = 18) -> None:
    """Draw `text` on a BGR image with its baseline's left end near `origin`; `fallback`
    (ASCII) with OpenCV's font when no installed font can draw `text`."""
    path = font_for(text, size)
    if path is None:
        scale = size / 30.0
        (width, height), baseline = cv2.getTextSize(fallback, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        _backdrop(image, origin[0] - 3, origin[1] - height - 3, width + 6, height + baseline + 6)
        cv2.putText(image, fallback, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2, cv2.LINE_AA)
        return
    from PIL import Image, ImageDraw

    font = _font(path, size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(mask).text((-left + 1, -top + 1), text, font=font, fill=255)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    x, y = origin[0], origin[1] - alpha.shape[0]
    # clip to the image: a face at the top edge still gets its name, shifted inside
    x, y = max(0, min(x, image.shape[1] - alpha.shape[1])), max(0, min(y, image.shape[0] - alpha.shape[0]))
    _backdrop(image, x - 3, y - 3, alpha.shape[1] + 6, alpha.shape[0] + 6)
    region = image[y:y + alpha.shape[0], x:x + alpha.shape[1]]
    alpha = alpha[:region.shape[0], :region.shape[1]]
    region[:] = (region * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(image.dtype)


def _backdrop(image: np.ndarray, x: int, y: int, width: int, height: int) -> None:
    """A dark box under a label, so it reads on a light wall as on a dark coat."""
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(image.shape[1], x + width), min(image.shape[0], y + height)
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * 0.25).astype(image.dtype)
