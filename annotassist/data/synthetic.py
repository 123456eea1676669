"""The embedded demo set: a seeded scene-parsing generator that needs no download.

Each image is a textured, unevenly lit background with background clutter (blobs and strokes that belong to
no class), and a few objects of five classes drawn in random order so that later ones occlude earlier ones.
Classes are told apart by shape, colour AND texture, and no single cue is enough: colour ranges overlap in
pairs (disc/ring, box/triangle, star/disc) and clutter reuses object colours. Class frequency is long-tailed
(star is rare), so with few labels the rare classes lag - the situation active labeling is for.

Every image depends only on (seed, split, index): the set is the same on every machine, and growing
`num_pool` keeps the first images unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import Config, voc_palette
from ..progress import progress as progress_bar
from .masks import atomic_save, write_mask

CLASSES = ["background", "disc", "box", "triangle", "ring", "star"]
# chance that an object slot is of class 1..5: long-tailed
CLASS_FREQ = np.array([0.40, 0.28, 0.17, 0.10, 0.05])
# hue ranges (0..1) per class; pairs overlap so colour alone does not tell the class
HUES = {1: (0.95, 1.12), 2: (0.45, 0.62), 3: (0.52, 0.70), 4: (0.00, 0.15), 5: (0.10, 0.20)}
GENERATOR_VERSION = 1
OBJECT_RADIUS = (0.07, 0.2)  # object radius range, as a share of the image size
OBJECTS = (2, 6)  # objects per image (upper bound exclusive)
CLUTTER = (2, 6)  # background blobs and strokes per image


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def _smooth_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: bilinear upsampling of random grids."""
    out = np.zeros((size, size))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.random((cells + 1, cells + 1))
        coords = np.linspace(0, cells, size, endpoint=False)
        i0 = coords.astype(int)
        fr = coords - i0
        top = grid[i0][:, i0] * (1 - fr)[None, :] + grid[i0][:, i0 + 1] * fr[None, :]
        bot = grid[i0 + 1][:, i0] * (1 - fr)[None, :] + grid[i0 + 1][:, i0 + 1] * fr[None, :]
        out += amp * (top * (1 - fr)[:, None] + bot * fr[:, None])
        total += amp
        amp *= 0.5
    return out / total


def _shape_mask(cls: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float,
                angle: float, rng: np.random.Generator) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if cls == 1:  # disc (slightly elliptic)
        e = rng.uniform(0.8, 1.0)
        return (u / r) ** 2 + (v / (r * e)) ** 2 < 1.0
    if cls == 2:  # box
        a = rng.uniform(0.6, 1.0)
        return (np.abs(u) < r) & (np.abs(v) < r * a)
    if cls == 3:  # triangle: three half-planes
        m = np.ones_like(u, dtype=bool)
        for k in range(3):
            t = 2 * np.pi * k / 3
            m &= (u * np.cos(t) + v * np.sin(t)) < 0.5 * r
        return m
    if cls == 4:  # ring
        d = np.sqrt(u**2 + v**2)
        w = rng.uniform(0.35, 0.55)
        return (d < r) & (d > r * w)
    # star: five points
    theta = np.arctan2(v, u)
    d = np.sqrt(u**2 + v**2)
    return d < r * (0.55 + 0.45 * np.cos(5 * theta))


def _texture(cls: int, yy: np.ndarray, xx: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """A brightness modulation in about [0.6, 1.2] that is typical of the class (but noisy)."""
    u = xx * np.cos(angle) + yy * np.sin(angle)
    if cls == 1:  # smooth, shaded like a sphere-ish gradient
        return 0.85 + 0.25 * np.sin(u / rng.uniform(12, 20))
    if cls == 2:  # checker
        p = rng.uniform(3, 6)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        return 0.75 + 0.35 * ((np.floor(u / p) + np.floor(v / p)) % 2)
    if cls == 3:  # grainy
        return 0.7 + 0.4 * rng.random(yy.shape)
    if cls == 4:  # fine stripes
        return 0.75 + 0.35 * (np.sin(u / rng.uniform(0.8, 1.4)) > 0)
    return 0.8 + 0.3 * (np.sin(xx / 2.0) * np.sin(yy / 2.0) > 0.2)  # star: dots


def generate_sample(seed: int, split: int, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, mask uint8 HxW) pair; a pure function of its arguments."""
    rng = np.random.default_rng([seed, split, index, GENERATOR_VERSION])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # background: noisy colour field with a random hue, two tones
    hue = rng.random()
    n1, n2 = _smooth_noise(rng, size), _smooth_noise(rng, size)
    img = _hsv_to_rgb(hue + 0.15 * (n1 - 0.5), 0.25 + 0.4 * n2, 0.35 + 0.5 * n1)
    mask = np.zeros((size, size), dtype=np.uint8)
    # clutter: blobs and strokes in object-like colours that are still background
    for _ in range(rng.integers(*CLUTTER)):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, size / 6)
        theta = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + 0.3 * np.sin(3 * theta + rng.uniform(0, 6)) + 0.2 * np.sin(7 * theta + rng.uniform(0, 6))
        blob = np.hypot(yy - cy, xx - cx) < r * wobble
        if rng.random() < 0.5:  # a stroke instead of a blob
            a = rng.uniform(0, np.pi)
            blob = (np.abs((xx - cx) * np.sin(a) - (yy - cy) * np.cos(a)) < rng.uniform(1, 3)) & \
                   (np.hypot(yy - cy, xx - cx) < r * 2)
        c = _hsv_to_rgb(np.array(rng.random()), np.array(rng.uniform(0.4, 0.9)), np.array(rng.uniform(0.4, 0.9)))
        img[blob] = 0.5 * img[blob] + 0.5 * c
    # objects, drawn in order: later ones occlude earlier ones
    for _ in range(rng.integers(*OBJECTS)):
        cls = int(rng.choice(5, p=CLASS_FREQ)) + 1
        r = rng.uniform(size * OBJECT_RADIUS[0], size * OBJECT_RADIUS[1])
        cy, cx = rng.uniform(r * 0.3, size - r * 0.3), rng.uniform(r * 0.3, size - r * 0.3)
        angle = rng.uniform(0, 2 * np.pi)
        m = _shape_mask(cls, yy, xx, cy, cx, r, angle, rng)
        if m.sum() < 12:
            continue
        lo, hi = HUES[cls]
        base = _hsv_to_rgb(np.array(rng.uniform(lo, hi)), np.array(rng.uniform(0.45, 0.95)),
                           np.array(rng.uniform(0.55, 0.95)))
        tex = _texture(cls, yy, xx, angle, rng)[..., None]
        img[m] = np.clip(base[None, :] * tex[m], 0, 1)
        mask[m] = cls
    # uneven light, sensor noise
    gy, gx = rng.uniform(-0.4, 0.4, size=2)
    light = 1 + gy * (yy / size - 0.5) + gx * (xx / size - 0.5)
    img = img * light[..., None] + rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), mask


def generate(out: str | Path, num_pool: int = 300, num_val: int = 100, size: int = 128, seed: int = 0,
             progress: bool = True) -> Path:
    """Write images/, masks/, train.txt, val.txt, classes.txt under `out` (the list layout)."""
    out = Path(out)
    palette = voc_palette(len(CLASSES))
    for split_name, split_code, n in (("train", 0, num_pool), ("val", 1, num_val)):
        lines = []
        for i in progress_bar(range(n), desc=f"synthetic {split_name}", unit="image", disable=not progress,
                              leave=False):
            img, mask = generate_sample(seed, split_code, i, size)
            rel_img, rel_mask = f"images/{split_name}/{i:05d}.png", f"masks/{split_name}/{i:05d}.png"
            atomic_save(Image.fromarray(img), out / rel_img, format="PNG")
            write_mask(mask, out / rel_mask, palette)
            lines.append(f"{rel_img} {rel_mask}")
        (out / f"{split_name}.txt").write_text("\n".join(lines) + "\n")
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    meta = {"num_pool": num_pool, "num_val": num_val, "size": size, "seed": seed, "version": GENERATOR_VERSION}
    (out / "synthetic.json").write_text(json.dumps(meta))
    return out


def ensure_generated(cfg: Config, root: Path) -> None:
    s = cfg.synthetic
    meta = {"num_pool": s.num_pool, "num_val": s.num_val, "size": s.size, "seed": s.seed,
            "version": GENERATOR_VERSION}
    marker = root / "synthetic.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == meta:
                return
        except json.JSONDecodeError:
            pass
    generate(root, s.num_pool, s.num_val, s.size, s.seed)
