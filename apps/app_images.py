"""Images of the ranking app: uploads (checked, then shrunk at once to the model's input), dataset
images and the framed thumbnails of a rank list."""

from __future__ import annotations

import os
from pathlib import Path

from .app_errors import AppError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000  # ~ 7,000 x 5,700; anything larger is refused, not decoded
MIN_UPLOAD_SIDE = 8
DRAFT_MIN_PIXELS = 4_000_000  # JPEGs above this decode at a reduced DCT scale (never below the target size)
THUMB_SIZE = (128, 64)  # (H, W) of gallery thumbnails, the ReID aspect ratio
MATCH_COLOUR = (44, 160, 44)
NONMATCH_COLOUR = (214, 39, 40)
JUNK_COLOUR = (150, 150, 150)
QUERY_COLOUR = (31, 119, 180)


def load_upload(path: str | os.PathLike | None, size: tuple[int, int] | None = None, max_side: int | None = None):
    """Open an uploaded file as an RGB image, refusing non-images, corrupt files and huge images.

    With ``size`` (H, W: the model's input) the image is resized to exactly that size right after
    decoding, with the bicubic filter the model's test transform uses (so its features are those of
    the full-size image), and the full-size pixels are dropped at once: a 39-megapixel photo costs
    its decoded size only for the moment of the resize, not for the session that keeps the result.
    Without ``size``, ``max_side`` bounds the longer side instead (aspect kept).
    """
    from PIL import Image, UnidentifiedImageError

    if path is None or str(path) == "":
        raise AppError("No image uploaded: drop an image file (JPEG, PNG, WebP, ...) into the upload box first.")
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise AppError(f"The uploaded file {name!r} could not be found on the server; upload it again.")
    nbytes = path.stat().st_size
    if nbytes > MAX_UPLOAD_BYTES:
        raise AppError(f"The uploaded file {name!r} is {nbytes / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        with Image.open(path) as probe:
            w, h = probe.size
            if w * h > MAX_UPLOAD_PIXELS:
                raise AppError(
                    f"The uploaded image {name!r} is {w} x {h} pixels ({w * h / 1e6:.0f} MP); the limit is "
                    f"{MAX_UPLOAD_PIXELS / 1e6:.0f} MP. Crop it to the person first."
                )
            probe.verify()  # catches truncated / corrupt files without decoding everything twice
        with Image.open(path) as img:
            if size is None and max_side is not None and max(w, h) > max_side:
                scale = max_side / max(w, h)
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
            if size is not None and img.format == "JPEG" and w * h > DRAFT_MIN_PIXELS:
                img.draft("RGB", (int(size[1]), int(size[0])))  # decode at 1/2, 1/4 or 1/8 scale, still >= size
            img.load()
            rgb = img.convert("RGB")
        if size is not None:
            rgb = shrink(rgb, size)  # the decoded full-size image is dropped here
    except AppError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise AppError(f"The uploaded file {name!r} is not an image this app can read ({type(e).__name__}).") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise AppError(f"The uploaded image {name!r} is corrupt or truncated ({e}).") from e
    if min(w, h) < MIN_UPLOAD_SIDE:
        raise AppError(f"The uploaded image {name!r} is {w} x {h} pixels; it needs at least {MIN_UPLOAD_SIDE} per side.")
    return rgb


def shrink(img, size: tuple[int, int]):
    """``img`` resized to ``size`` (H, W) with the test transform's bicubic filter (a copy when it has that size)."""
    from PIL import Image

    target = (int(size[1]), int(size[0]))
    return img.copy() if img.size == target else img.resize(target, Image.BICUBIC)


def open_record_image(path: str):
    """A dataset image as RGB; an unreadable file becomes a grey tile that says so."""
    from PIL import Image, ImageDraw

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError):
        tile = Image.new("RGB", (THUMB_SIZE[1], THUMB_SIZE[0]), (200, 200, 200))
        ImageDraw.Draw(tile).text((4, THUMB_SIZE[0] // 2 - 6), "missing", fill=(80, 80, 80))
        return tile


def bordered_thumbnail(img, colour: tuple[int, int, int], size: tuple[int, int] = THUMB_SIZE, border: int = 5):
    """Resize to ``size`` (H, W) and frame it in ``colour`` (green match, red non-match, grey junk)."""
    from PIL import ImageOps

    h, w = size
    thumb = img.convert("RGB").resize((w - 2 * border, h - 2 * border))
    return ImageOps.expand(thumb, border=border, fill=colour)
