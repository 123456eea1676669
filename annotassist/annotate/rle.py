"""Label Studio's brush RLE in numpy: the same bytes as `label_studio_sdk.converter.brush`, much faster.

The format is thi.ng rle-pack over a mask's RGBA bytes (a mask of H x W becomes H*W*4 values, all four channels
equal to the mask value). The bit stream is

    header   32 bits: number of values, 5 bits: word size - 1, 4 x 4 bits: the four run-length field sizes - 1
    chunks   1 bit: repeat (1) or literal (0); 2 bits: which run-length field size; that many bits: length - 1;
             then one value (repeat) or `length` values (literal), each `word size` bits
    padding  zeros up to a whole byte

The SDK's encoder always writes word size 8 and field sizes (3, 4, 8, 16). It writes a run of 1 as a literal,
runs of 2..8 / 9..16 / 17..256 with the 3 / 4 / 8-bit field, longer runs with the 16-bit field, splitting
runs over 65536 into full 65536 chunks first. It pads with 1..8 zero bits (a whole zero byte when the stream
already ends on a byte boundary). All of that is reproduced here, bit for bit, because the tests compare bytes.

The SDK walks the stream one bit at a time in Python (seconds for a noisy 1024 x 1024 mask). Here encoding is
vectorized completely. Decoding is serial by nature (a chunk's length decides where the next one starts), so
the chunk length at EVERY bit position is computed at once with numpy, leaving only a pointer walk over chunk
starts in Python; reading the values and expanding the runs is vectorized again.
"""
from __future__ import annotations

import numpy as np

from ..errors import AnnotassistError

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)  # the SDK's run-length field sizes
HEADER_BITS = 32 + 5 + 4 * 4
MAX_RUN = 1 << 16  # longest run one 16-bit chunk holds
# decoding: streams this long are walked in segments of SEGMENT_BITS at once (below, one walk is quicker)
PARALLEL_BITS = 1 << 18
SEGMENT_BITS = 4096
OFFSETS = 16


class RLEError(AnnotassistError):
    """A brush RLE that cannot be decoded (truncated, wrong size, not bytes)."""


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """A (H, W) mask as Label Studio brush RLE. Booleans become 0/255 (Label Studio shows 255, hides 1)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise RLEError(f"a brush mask must be a non-empty 2-D array, got shape {mask.shape}")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8) * 255
    elif not np.issubdtype(mask.dtype, np.integer) or mask.min() < 0 or mask.max() > 255:
        raise RLEError(f"a brush mask must be bool or integers 0..255, got {mask.dtype}")
    lengths, values = _runs(mask.ravel().astype(np.uint8))
    # every pixel is repeated over R, G, B, A: the runs of the RGBA stream are the pixel runs times 4
    return _encode_runs(lengths * 4, values, mask.size * 4)


def encode(values: np.ndarray) -> list[int]:
    """Encode a flat uint8 array (the SDK's `encode_rle`)."""
    values = np.asarray(values).ravel()
    if values.size == 0:
        raise RLEError("cannot encode an empty array")
    lengths, vals = _runs(values.astype(np.uint8))
    return _encode_runs(lengths, vals, values.size)


def rle_to_mask(rle, height: int, width: int) -> np.ndarray:
    """Decode brush RLE to a (height, width) uint8 mask: the alpha channel, as the SDK's converter reads it."""
    num, values, times = _chunks(rle)
    if num != height * width * 4:
        raise RLEError(f"the RLE holds {num} values, a {width}x{height} brush mask needs "
                       f"{height * width * 4} (4 per pixel): it was drawn on an image of another size")
    # expand straight to the alpha bytes (stream positions 3, 7, 11, ...; x // 4 of them lie below x)
    # instead of all four channels
    alpha = np.diff(np.concatenate(([0], np.cumsum(times) // 4)))
    return np.repeat(values, alpha).reshape(height, width)


def decode(rle) -> np.ndarray:
    """Decode a thi.ng rle-pack stream (any field sizes, word size <= 8) to its flat uint8 values."""
    _, values, times = _chunks(rle)
    return np.repeat(values, times)


def _runs(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.concatenate(([0], np.flatnonzero(v[1:] != v[:-1]) + 1))
    lengths = np.diff(np.append(starts, v.size))
    return lengths.astype(np.int64), v[starts].astype(np.int64)


def _encode_runs(lengths: np.ndarray, values: np.ndarray, num: int) -> list[int]:
    if num >= 1 << 32:
        raise RLEError(f"{num} values do not fit the format's 32-bit count")
    # runs longer than 65536 are written as full 65536 chunks followed by the rest, as the SDK does
    n_full = np.where(lengths > MAX_RUN, (lengths - 1) // MAX_RUN, 0)
    rest = lengths - n_full * MAX_RUN
    # the field size each run's last chunk uses: 1 -> literal of one, then 3/4/8/16 bits by length
    idx = np.select([lengths <= 8, lengths <= 16, lengths <= 256], [0, 1, 2], 3)
    field = np.array(RLE_SIZES, dtype=np.int64)[idx]
    flag = (lengths > 1).astype(np.int64)
    nbits = 1 + 2 + field + WORD_SIZE
    codes = (flag << (nbits - 1)) | (idx << (field + WORD_SIZE)) | ((rest - 1) << WORD_SIZE) | values
    if n_full.any():
        per_run = n_full + 1
        run_of = np.repeat(np.arange(lengths.size), per_run)
        is_last = np.arange(run_of.size) - np.repeat(np.cumsum(per_run) - per_run, per_run) == n_full[run_of]
        full_code = (1 << 26) | (3 << 24) | ((MAX_RUN - 1) << WORD_SIZE) | values[run_of]
        codes = np.where(is_last, codes[run_of], full_code)
        nbits = np.where(is_last, nbits[run_of], 27)
    rs_bits = 0
    for s in RLE_SIZES:
        rs_bits = (rs_bits << 4) | (s - 1)
    head_codes = np.array([num, ((WORD_SIZE - 1) << 16) | rs_bits], dtype=np.int64)
    codes = np.concatenate((head_codes, codes)).astype(np.uint64)
    nbits = np.concatenate(([32, 21], nbits)).astype(np.int64)
    return _pack(codes, nbits)


def _pack(codes: np.ndarray, nbits: np.ndarray) -> list[int]:
    """Concatenate variable-length bit codes (each <= 32 bits) MSB first into bytes, with the SDK's padding."""
    starts = np.cumsum(nbits) - nbits
    total = int(starts[-1] + nbits[-1])
    nbytes = total // 8 + 1  # the SDK pads 1..8 zero bits, so always one byte past the last full one
    first = starts >> 3
    # place each code in a 40-bit window starting at its first byte; codes never share bits, so adding
    # the window's bytes into the output is the same as OR-ing them
    window = codes << (40 - (starts & 7) - nbits).astype(np.uint64)
    out = np.zeros(nbytes + 5, dtype=np.float64)
    for k in range(5):
        part = ((window >> np.uint64(32 - 8 * k)) & np.uint64(0xFF)).astype(np.float64)
        out += np.bincount(first + k, weights=part, minlength=nbytes + 5)
    return out[:nbytes].astype(np.uint8).tolist()


def _chunks(rle) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of values, each run's value, each run's length): a literal chunk gives runs of 1."""
    data = _as_bytes(rle)
    if data.size * 8 < HEADER_BITS:
        raise RLEError(f"the RLE is {data.size} bytes, shorter than its 7-byte header")
    num = int.from_bytes(data[:4].tobytes(), "big")
    rest = int.from_bytes(data[4:7].tobytes(), "big") >> 3
    word = ((rest >> 16) & 31) + 1
    sizes = np.array([((rest >> (12 - 4 * i)) & 15) + 1 for i in range(4)], dtype=np.uint32)
    if word > 8:
        raise RLEError(f"the RLE uses {word}-bit values; brush masks hold bytes (8 bits)")
    empty = np.zeros(0, np.int64)
    if num == 0:
        return 0, empty.astype(np.uint8), empty
    total = data.size * 8
    # b32[i]: the 32 bits starting at byte i; the 32 bits at bit p are b32[p >> 3] << (p & 7), whose top 25
    # are exact: enough for a chunk's flag, field index and widest (16-bit) length, or for one value
    padded = np.concatenate((data, np.zeros(4, np.uint8))).astype(np.uint32)
    b32 = (padded[:-4] << 24) | (padded[1:-3] << 16) | (padded[2:-2] << 8) | padded[3:-1]
    walk = _starts_serial if total < PARALLEL_BITS else _starts_parallel
    starts = walk(b32, total, num, word, sizes)
    repeat, field, count, step = _read(b32, starts, word, sizes)
    covered = np.cumsum(count)
    last = int(np.searchsorted(covered, num))  # the chunk that reaches `num` values
    if last == covered.size:
        raise RLEError(f"the RLE ends after {int(covered[-1])} of the {num} values its header announces")
    starts, repeat, field, count = starts[:last + 1], repeat[:last + 1], field[:last + 1], count[:last + 1]
    end = int(starts[-1] + step[last])
    if end > total:
        raise RLEError(f"the RLE ends in the middle of a chunk (needs {end} bits, has {total})")
    if covered[last] > num and not repeat[-1]:
        raise RLEError(f"the RLE's last chunk writes past the {num} values its header announces")
    nvals = np.where(repeat, 1, count)
    first = np.repeat(starts + 3 + field, nvals)
    k = np.arange(first.size) - np.repeat(np.cumsum(nvals) - nvals, nvals)
    values = (_bits_at(b32, first + word * k) >> np.uint32(32 - word)).astype(np.uint8)
    times = np.repeat(np.where(repeat, count, 1), nvals)
    times[-1] -= int(covered[last]) - num  # a repeat may run past the end: the SDK clips it
    return num, values, times


def _bits_at(b32: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.take(b32, p >> 3, mode="clip") << (p & 7).astype(np.uint32)


def _read(b32, p, word: int, sizes):
    """For chunks starting at bit positions p: repeat flag, field size, value count, and total bit length."""
    w = _bits_at(b32, p)
    repeat = (w >> np.uint32(31)).astype(bool)
    field = sizes[(w >> np.uint32(29)) & np.uint32(3)]
    count = ((w << np.uint32(3)) >> (np.uint32(32) - field)).astype(np.int64) + 1
    step = 3 + field.astype(np.int64) + np.where(repeat, word, word * count)
    return repeat, field.astype(np.int64), count, step


def _starts_serial(b32, total: int, num: int, word: int, sizes) -> np.ndarray:
    """Small streams: every position's chunk length at once, then a pointer walk in Python."""
    _, _, count, step = _read(b32, np.arange(total, dtype=np.int64), word, sizes)
    nxt, cnt = memoryview(step + np.arange(total)), memoryview(count)
    p, covered, starts = HEADER_BITS, 0, []
    while covered < num and p < total:
        starts.append(p)
        covered += cnt[p]
        p = nxt[p]
    return np.array(starts, dtype=np.int64)


def _starts_parallel(b32, total: int, num: int, word: int, sizes) -> np.ndarray:
    """Large streams: walk chunk chains from many places at once, then stitch the true one together.

    The chain of chunks from any bit position is fixed, so a walk started mid-chunk either falls into the
    true chain (and from there IS the true chain) or follows a wrong one. Walks start at OFFSETS consecutive
    positions every SEGMENT_BITS, all in lockstep; a walk stops where it lands on a position another walk
    has already visited (from there the chains are the same), at the end, or two segments on. Each visited
    position remembers its walk. The true chain is then stitched from the header on: take the rest of the
    walk that visited the current position and jump to where that walk stopped. A position no walk visited
    is walked on its own (rare) until it meets a visited one.
    """
    seg = np.arange(HEADER_BITS, total, SEGMENT_BITS, dtype=np.int64)
    pos = (seg[:, None] + np.arange(OFFSETS)[None, :]).ravel()
    cap = np.repeat(seg + 2 * SEGMENT_BITS, OFFSETS)
    keep = pos < total
    pos, cap = pos[keep], cap[keep]
    wid = np.arange(pos.size, dtype=np.int64)
    owner = np.zeros(total, dtype=np.int32)  # walk id + 1 that visited a position, 0 = none
    owner[pos] = wid + 1
    exits = np.zeros(pos.size, dtype=np.int64)
    rec_w, rec_p = [wid], [pos]
    while pos.size:
        new = pos + _read(b32, pos, word, sizes)[3]
        inside = np.minimum(new, total - 1)
        go = (new < total) & (new < cap[wid]) & (owner[inside] == 0)
        owner[new[go]] = wid[go] + 1  # two walks landing on one position: one wins, the other stops
        go &= owner[inside] == wid + 1
        exits[wid[~go]] = new[~go]
        pos, wid = new[go], wid[go]
        rec_w.append(wid)
        rec_p.append(pos)
    walk_of = np.concatenate(rec_w)
    order = np.argsort(walk_of, kind="stable")
    visited = np.concatenate(rec_p)[order]  # grouped by walk, each walk's positions increasing
    first = np.concatenate(([0], np.cumsum(np.bincount(walk_of, minlength=exits.size))))
    owner_mv, pieces, cur = memoryview(owner), [], HEADER_BITS
    while cur < total:
        f = owner_mv[cur] - 1
        if f < 0:
            piece, cur = _walk_alone(b32, cur, total, owner_mv, word, sizes)
            pieces.append(piece)
            continue
        a, b = first[f], first[f + 1]
        pieces.append(visited[a + visited[a:b].searchsorted(cur):b])
        cur = int(exits[f])
    return np.concatenate(pieces)


def _walk_alone(b32, p: int, total: int, owner, word: int, sizes) -> tuple[np.ndarray, int]:
    out = []
    while p < total and (not out or owner[p] == 0):
        out.append(p)
        p += int(_read(b32, np.array([p]), word, sizes)[3][0])
    return np.array(out, dtype=np.int64), p


def _as_bytes(rle) -> np.ndarray:
    if isinstance(rle, np.ndarray):
        if rle.ndim == 1 and np.issubdtype(rle.dtype, np.integer) and rle.size and 0 <= rle.min() \
                and rle.max() <= 255:
            return rle.astype(np.uint8, copy=False)
    elif isinstance(rle, (list, tuple)):
        try:  # bytes() of a list is the quickest conversion and rejects anything but ints 0..255
            data = bytes(rle)
        except (TypeError, ValueError):
            data = b""
        if data:
            return np.frombuffer(data, dtype=np.uint8)
    raise RLEError("the RLE must be a non-empty list of integers 0..255 (a JSON list of bytes); got "
                   f"{type(rle).__name__} {str(rle)[:40]}")
