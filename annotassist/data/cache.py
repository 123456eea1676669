"""Images and masks decoded once, at the working scale, kept as uint8 and keyed by their content.

Every training item reads three images and a mask, every evaluation and scoring pass reads them again, and a
round decodes the same PNGs many times over. The cache keeps each one decoded and resized to `image_scale`
(uint8, the exact tensor the dataset would have made) under the sha256 of the file's bytes: a file whose
content changes gets a new key and is decoded afresh, never served stale. `prefill` hashes every file of a
round once (fast next to decoding) and decodes the missing ones in this process, before DataLoader workers
fork, so the workers share the decoded images instead of each decoding its own.

One cache per process (`shared_cache()`), bounded in bytes (`train.decode_cache_mb`). Once full it takes no
more entries (the images that do not fit are decoded every time, as without a cache: with random access,
evicting would only trade one miss for another), and each prefill drops the entries of files that are no
longer part of the round.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..errors import DataError
from .masks import IGNORE, read_image, read_mask
from .transforms import resize_image, resize_mask, to_tensors


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (moved or deleted since the workspace was synced?)") from None


class DecodeCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: dict[tuple, torch.Tensor] = {}
        self.bytes = 0
        self.hits = self.misses = 0
        self.full = False  # an entry did not fit
        self.known: dict[str, str] = {}  # path -> sha256, as hashed by the last prefill (this round's files)

    def _get(self, key: tuple):
        t = self.items.get(key)
        if t is not None:
            self.hits += 1
        return t

    def _put(self, key: tuple, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        if self.bytes + size <= self.max_bytes:
            self.items[key] = t
            self.bytes += size
        else:
            self.full = True

    def _sha(self, path: Path) -> tuple[str, bytes | None]:
        """The file's content hash: from this round's prefill, else read and hashed now (bytes kept to decode)."""
        sha = self.known.get(str(path))
        if sha is not None:
            return sha, None
        data = _read(path)
        return hashlib.sha256(data).hexdigest(), data

    def image(self, path: str | Path, scale: float = 1.0) -> torch.Tensor:
        """uint8 (3, H*scale, W*scale): read_image, then the bilinear antialiased resize of the datasets."""
        sha, data = self._sha(Path(path))
        key = ("image", sha, scale)
        t = self._get(key)
        if t is None:
            self.misses += 1
            img, _ = to_tensors(read_image(path, data))
            t = resize_image(img, scale).as_subclass(torch.Tensor)
            self._put(key, t)
        return t

    def mask(self, path: str | Path, num_classes: int, ignore_index: int = IGNORE, scale: float = 1.0,
             palette=None) -> torch.Tensor:
        """uint8 (1, H*scale, W*scale) class ids, 255 = ignore: read_mask, then the nearest-neighbour resize."""
        sha, data = self._sha(Path(path))
        key = ("mask", sha, scale, num_classes, ignore_index, tuple(map(tuple, palette or [])))
        t = self._get(key)
        if t is None:
            self.misses += 1
            m = torch.as_tensor(read_mask(path, num_classes, ignore_index, palette, data=data))[None]
            t = resize_mask(m, scale)
            self._put(key, t)
        return t

    def prefill(self, images: list[Path], masks: list[Path], scale: float, num_classes: int,
                ignore_index: int = IGNORE) -> None:
        """Hash every file of this round (a changed file gets a new key), drop the entries of files no longer in
        it, then decode the ones not cached yet, until the cache is full."""
        self.known = {str(p): hashlib.sha256(_read(Path(p))).hexdigest() for p in list(images) + list(masks)}
        current = set(self.known.values())
        for key in [k for k in self.items if k[1] not in current]:
            t = self.items.pop(key)
            self.bytes -= t.numel() * t.element_size()
        self.full = False
        for p in images:
            if self.full:
                return
            self.image(p, scale)
        for p in masks:
            if self.full:
                return
            self.mask(p, num_classes, ignore_index, scale)


_SHARED: DecodeCache | None = None


def shared_cache(max_mb: int) -> DecodeCache | None:
    """This process's cache, resized to `max_mb` (0 = no cache: decode every time)."""
    global _SHARED
    if max_mb <= 0:
        return None
    if _SHARED is None:
        _SHARED = DecodeCache(max_mb * 2**20)
    _SHARED.max_bytes = max_mb * 2**20
    return _SHARED
