"""The brush RLE codec against label_studio_sdk.converter.brush, byte for byte and value for value."""
from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter import brush
from PIL import Image

from annotassist.annotate import rle as codec
from annotassist.annotate.rle import RLEError, decode, encode, mask_to_rle, rle_to_mask

from conftest import CAMVID, needs_camvid

SHAPES = [(1, 1), (1, 2), (2, 1), (1, 3), (3, 5), (7, 7), (8, 8), (16, 17), (33, 64), (64, 65), (1, 70000), (250, 300)]


def _mask(kind: str, shape, rng) -> np.ndarray:
    if kind == "empty":
        return np.zeros(shape, np.uint8)
    if kind == "full":
        return np.full(shape, 255, np.uint8)
    if kind == "noise":
        return (rng.random(shape) < 0.5).astype(np.uint8) * 255
    if kind == "bytes":  # any byte values, runs of every length
        return rng.integers(0, 256, shape).astype(np.uint8)
    m = np.zeros(shape, np.uint8)  # a block: long runs, including some over 65536 values
    m[shape[0] // 4: shape[0] // 2 + 1, shape[1] // 3:] = 255
    return m


def _check(m: np.ndarray) -> None:
    ref = brush.mask2rle(m)
    ours = mask_to_rle(m)
    assert ours == ref
    flat = brush.decode_rle(ref)
    assert np.array_equal(decode(ref), flat)
    assert np.array_equal(rle_to_mask(ref, *m.shape), flat.reshape(*m.shape, 4)[..., 3])
    assert np.array_equal(rle_to_mask(ours, *m.shape), m)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", ["empty", "full", "noise", "bytes", "block"])
def test_matches_sdk(shape, kind):
    _check(_mask(kind, shape, np.random.default_rng(sum(shape))))


@needs_camvid
def test_matches_sdk_on_real_camvid_masks():
    names = sorted((CAMVID / "trainannot").glob("*.png"))[::120][:3]
    for path in names:
        label = np.array(Image.open(path))
        for c in np.unique(label)[:3]:
            _check((label == c).astype(np.uint8) * 255)


def test_bool_masks_become_255():
    m = np.zeros((5, 6), bool)
    m[1:3, 2:5] = True
    assert mask_to_rle(m) == brush.mask2rle(m.astype(np.uint8) * 255)


def test_general_encode_matches_sdk_with_single_value_runs():
    rng = np.random.default_rng(1)
    for n in [1, 2, 9, 17, 257, 1000, 70000, 200000]:
        v = rng.integers(0, 3, n).astype(np.uint8)
        v[n // 3: n // 2] = 7
        ref = brush.encode_rle(v)
        assert encode(v) == ref
        assert np.array_equal(decode(ref), brush.decode_rle(ref))


def _thing_stream(rng, n_chunks: int, sizes, word: int = 8) -> list[int]:
    """A valid rle-pack stream with literal chunks of many values and other field sizes (as Label
    Studio's browser writes them, unlike the SDK), built from its definition."""
    bits, num = [], 0

    def put(value, width):
        bits.extend((value >> (width - 1 - i)) & 1 for i in range(width))

    chunks = []
    for _ in range(n_chunks):
        idx = int(rng.integers(0, 4))
        length = int(rng.integers(1, min(1 << sizes[idx], 300) + 1))
        chunks.append((bool(rng.random() < 0.5), idx, length))
        num += length
    put(num, 32)
    put(word - 1, 5)
    for s in sizes:
        put(s - 1, 4)
    for repeat, idx, length in chunks:
        put(int(repeat), 1)
        put(idx, 2)
        put(length - 1, sizes[idx])
        for _ in range(1 if repeat else length):
            put(int(rng.integers(0, 1 << word)), word)
    bits.extend([0] * (-len(bits) % 8))
    return [int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8)]


@pytest.mark.parametrize("sizes,word", [((3, 4, 8, 16), 8), ((1, 2, 5, 9), 8), ((4, 4, 4, 4), 6), ((16, 1, 3, 7), 8)])
def test_decodes_literal_chunks_and_other_field_sizes(sizes, word):
    rng = np.random.default_rng(len(sizes) + word)
    stream = _thing_stream(rng, 400, sizes, word)
    assert np.array_equal(decode(stream), brush.decode_rle(stream))


@pytest.mark.parametrize("segment,offsets", [(64, 1), (200, 4), (997, 16)])
def test_parallel_walk_matches_on_small_streams(monkeypatch, segment, offsets):
    """The segmented walk (used for large streams) forced on small ones, with awkward segment sizes."""
    monkeypatch.setattr(codec, "PARALLEL_BITS", 0)
    monkeypatch.setattr(codec, "SEGMENT_BITS", segment)
    monkeypatch.setattr(codec, "OFFSETS", offsets)
    rng = np.random.default_rng(segment)
    for kind in ["noise", "bytes", "block", "empty"]:
        _check(_mask(kind, (40, 57), rng))
    stream = _thing_stream(rng, 300, (2, 3, 6, 11))
    assert np.array_equal(decode(stream), brush.decode_rle(stream))


def test_large_noisy_mask_uses_the_parallel_walk():
    m = _mask("noise", (300, 400), np.random.default_rng(3))
    ours = mask_to_rle(m)
    assert len(ours) * 8 > codec.PARALLEL_BITS
    assert ours == brush.mask2rle(m)
    assert np.array_equal(rle_to_mask(ours, 300, 400), m)


def test_malformed_rle_is_reported():
    good = mask_to_rle(_mask("noise", (20, 20), np.random.default_rng(0)))
    with pytest.raises(RLEError, match="needs"):
        rle_to_mask(good, 20, 21)  # drawn on an image of another size
    with pytest.raises(RLEError, match="ends"):
        decode(good[: len(good) // 2])
    with pytest.raises(RLEError, match="header"):
        decode([1, 2, 3])
    for bad in ([], [300, 1, 2, 3, 4, 5, 6, 7], "abc", 5, [1.5] * 8, None, [[1, 2], [3]]):
        with pytest.raises(RLEError):
            decode(bad)
    with pytest.raises(RLEError):
        mask_to_rle(np.zeros((0, 4), np.uint8))
    with pytest.raises(RLEError):
        mask_to_rle(np.full((2, 2), 300))
