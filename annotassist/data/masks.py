"""Image and mask files: reading with checks, writing palette PNGs atomically.

Inside annotassist a mask is a uint8 array (H, W) of class ids 0..C-1, with 255 = ignore. A dataset's own
ignore value (CamVid: 11) is mapped to 255 when read.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IGNORE = 255


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _too_large(path, e: Exception, what: str = "an image") -> DataError:
    """PIL refuses a header that claims more pixels than it will decode (a damaged or hostile file)."""
    return DataError(f"{path}: cannot be read as {what}: its header claims too many pixels ({e}); replace or "
                     "remove the file")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after checking that the file decodes fully (a truncated PNG fails here, not mid-training)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError as e:
        raise _too_large(path, e) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as an image ({e}); replace or remove the file") from None


def read_image(path: str | Path, data: bytes | None = None) -> Image.Image:
    """The image as RGB; `data`, when given, is the file's content already read (decoded instead of the file)."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError as e:
        raise _too_large(path, e) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as an image ({e}); replace or remove the file") from None


def read_mask(path: str | Path, num_classes: int, ignore_index: int = IGNORE,
              palette: list[tuple[int, int, int]] | None = None, values: list[int] | None = None,
              data: bytes | None = None) -> np.ndarray:
    """Read a mask file into class ids with 255 = ignore; raise DataError naming the file on anything odd.

    Accepts single-channel (8 or 16 bit, grayscale included) and palette ('P') PNGs holding class ids, RGB colour
    masks when a palette is given (each colour must be a class colour), and masks whose pixel value of class i
    is `values[i]` (binary masks saved as 0/255; every other value is "not labeled"). `data`: the file's content
    already read.
    """
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except Image.DecompressionBombError as e:
        raise _too_large(path, e, "a mask image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as a mask image ({e}); replace or remove the file") from None
    if mode in ("RGB", "RGBA"):
        if not palette:
            raise DataError(f"{path}: an RGB mask, but the config has no dataset.palette to map colours to "
                            "classes; save masks as class-id PNGs or add the palette")
        arr = colours_to_ids(arr[..., :3], palette, path)
    elif mode not in ("L", "P", "I", "I;16"):
        raise DataError(f"{path}: mask mode {mode} is not supported; save masks as 8-bit class-id PNGs")
    if arr.ndim != 2:
        raise DataError(f"{path}: a mask must have one channel, this one has shape {arr.shape}")
    arr = arr.astype(np.int64)
    if values:
        ids = np.full(arr.shape, IGNORE, dtype=np.int64)
        for class_id, v in enumerate(values):
            ids[arr == v] = class_id
        return ids.astype(np.uint8)
    if ignore_index != IGNORE:
        arr[arr == ignore_index] = IGNORE
    bad = np.unique(arr[(arr >= num_classes) & (arr != IGNORE)])
    if bad.size or (arr < 0).any():
        shown = ", ".join(str(v) for v in bad[:10])
        raise DataError(f"{path}: class ids {shown} are outside the config's {num_classes} classes "
                        f"(0..{num_classes - 1}, ignore {ignore_index}); fix the mask or dataset.classes")
    return arr.astype(np.uint8)


def colours_to_ids(rgb: np.ndarray, palette: list[tuple[int, int, int]], path: str | Path = "") -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    out = np.full(code.shape, IGNORE, dtype=np.int64)
    known = np.zeros(code.shape, dtype=bool)
    for i, (r, g, b) in enumerate(palette):
        hit = code == ((r << 16) | (g << 8) | b)
        out[hit] = i
        known |= hit
    # black-ish VOC border colour (224, 224, 192) means ignore
    known |= code == ((224 << 16) | (224 << 8) | 192)
    if not known.all():
        colours = np.unique(code[~known])[:5]
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in colours)
        raise DataError(f"{path}: colours {shown} are not in dataset.palette; fix the mask or the palette")
    return out


def palette_bytes(palette: list[tuple[int, int, int]]) -> list[int]:
    flat = [0] * (256 * 3)
    for i, c in enumerate(palette[:255]):
        flat[3 * i: 3 * i + 3] = list(c)
    flat[3 * 255: 3 * 256] = [224, 224, 192]  # VOC's colour for 255 = ignore / boundary
    return flat


def atomic_save(image: Image.Image, path: str | Path, **kwargs) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_mask(mask: np.ndarray, path: str | Path, palette: list[tuple[int, int, int]]) -> None:
    """A VOC-style palette PNG: pixel value = class id, 255 = ignore; viewers show the class colours."""
    if mask.dtype != np.uint8:
        mask = mask.astype(np.uint8)
    mask = np.ascontiguousarray(mask)
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    im.putpalette(palette_bytes(palette))
    atomic_save(im, path, format="PNG", optimize=False)


def class_histogram(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class (ignore not counted)."""
    valid = mask[mask != IGNORE]
    return np.bincount(valid.ravel(), minlength=num_classes)[:num_classes].astype(np.int64)


def colorize(mask: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.array(palette, dtype=np.uint8)
    lut[IGNORE] = (224, 224, 192)
    return lut[mask]
