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
_FIELDS = np.array(RLE_SIZES, dtype=np.int64)
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
        mask = mask.view(np.uint8) * np.uint8(255)
    elif mask.dtype != np.uint8 and (not np.issubdtype(mask.dtype, np.integer) or mask.min() < 0
                                     or mask.max() > 255):
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
    """(run lengths, run values) of a flat uint8 array."""
    n = v.size
    # where the value changes, found 8 flags at a time: masks are mostly long runs, so most 8-byte words
    # of the flag array are zero and only the few others are looked into
    diff = np.zeros(-(-(n - 1) // 8) * 8, dtype=bool)
    np.not_equal(v[1:], v[:-1], out=diff[:n - 1])
    words = np.flatnonzero(diff.view(np.uint64) != 0)
    hit = diff.reshape(-1, 8)[words]
    changes = (words[:, None] * 8 + np.arange(1, 9))[hit]
    starts = np.concatenate(([0], changes))
    lengths = np.diff(np.append(starts, n))
    return lengths, v[starts].astype(np.int64)


def _encode_runs(lengths: np.ndarray, values: np.ndarray, num: int) -> list[int]:
    if num >= 1 << 32:
        raise RLEError(f"{num} values do not fit the format's 32-bit count")
    rest = lengths
    long_runs = lengths.max() > MAX_RUN
    if long_runs:  # runs over 65536 are written as full 65536 chunks followed by the rest, as the SDK does
        n_full = np.where(lengths > MAX_RUN, (lengths - 1) // MAX_RUN, 0)
        rest = lengths - n_full * MAX_RUN
    # each run's (last) chunk: a run of 1 is a literal of one, longer ones repeats with a 3/4/8/16-bit field
    idx = (lengths > 8).astype(np.int64) + (lengths > 16) + (lengths > 256)  # which field size: 0..3
    field = _FIELDS[idx]
    nbits = field + (3 + WORD_SIZE)
    codes = ((((lengths > 1) << 2 | idx) << field | (rest - 1)) << WORD_SIZE) | values
    if long_runs:
        per_run = n_full + 1
        run_of = np.repeat(np.arange(lengths.size), per_run)
        is_last = np.arange(run_of.size) - np.repeat(np.cumsum(per_run) - per_run, per_run) == n_full[run_of]
        full_code = (1 << 26) | (3 << 24) | ((MAX_RUN - 1) << WORD_SIZE) | values[run_of]
        codes = np.where(is_last, codes[run_of], full_code)
        nbits = np.where(is_last, nbits[run_of], 27)
    return _pack(codes.astype(np.uint64), nbits, num)


def _pack(codes: np.ndarray, nbits: np.ndarray, num: int) -> list[int]:
    """The header, then the chunks' bit codes (each <= 27 bits) MSB first, then the SDK's padding."""
    ends = np.cumsum(nbits) + HEADER_BITS
    starts = ends - nbits
    nbytes = int(ends[-1]) // 8 + 1  # the SDK pads 1..8 zero bits: always one byte past the last full one
    # each code lands in one 32-bit word or straddles two: shifted into a 64-bit window that starts at its
    # first word, the high half goes to that word and the low half to the next. Codes are in stream order
    # and never share bits, so OR-reducing each word's pieces assembles it.
    word = starts >> 5
    window = codes << (64 - (starts & 31) - nbits).astype(np.uint64)
    first = np.concatenate(([0], np.flatnonzero(word[1:] != word[:-1]) + 1))
    words = np.zeros(nbytes // 4 + 3, dtype=np.uint64)
    words[word[first]] |= np.bitwise_or.reduceat(window >> np.uint64(32), first)
    words[word[first] + 1] |= np.bitwise_or.reduceat(window & np.uint64(0xFFFFFFFF), first)
    out = words.astype(">u4").view(np.uint8)[:nbytes].copy()
    # header: count (32 bits), word size - 1 (5), field sizes - 1 (4 x 4), in the top 53 bits of 7 bytes
    head = num
    for v, width in [(WORD_SIZE - 1, 5)] + [(f - 1, 4) for f in RLE_SIZES]:
        head = (head << width) | v
    out[:7] |= np.frombuffer((head << 3).to_bytes(7, "big"), dtype=np.uint8)
    return out.tolist()


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
