"""The generated demo set: deterministic, stable when grown, long-tailed, readable as a list layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from annotassist.config import voc_palette
from annotassist.data.layouts import check_sample, read_list, read_split
from annotassist.data.masks import IGNORE, read_mask
from annotassist.data.synthetic import CLASSES, GENERATOR_VERSION, ensure_generated, generate, generate_sample

from conftest import config_from_file, make_config


def test_same_seed_same_arrays():
    for split, index in [(0, 0), (0, 7), (1, 3)]:
        img1, m1 = generate_sample(5, split, index, 64)
        img2, m2 = generate_sample(5, split, index, 64)
        np.testing.assert_array_equal(img1, img2)
        np.testing.assert_array_equal(m1, m2)


def test_different_seed_split_or_index_differs():
    img, m = generate_sample(0, 0, 0, 64)
    for args in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        img2, m2 = generate_sample(*args, 64)
        assert not np.array_equal(img, img2), args
    # masks differ too (not just the noise)
    assert not np.array_equal(m, generate_sample(1, 0, 0, 64)[1])


def test_sample_shapes_and_values():
    img, m = generate_sample(0, 0, 0, 48)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert m.shape == (48, 48) and m.dtype == np.uint8
    assert m.max() < len(CLASSES)
    assert img.std() > 10  # not a flat image


def test_class_frequencies_are_long_tailed_and_complete():
    pixels = np.zeros(len(CLASSES), dtype=np.int64)
    images_with = np.zeros(len(CLASSES), dtype=np.int64)
    for i in range(100):
        _, m = generate_sample(0, 0, i, 64)
        assert m.max() < len(CLASSES) and not (m == IGNORE).any()
        pixels += np.bincount(m.ravel(), minlength=len(CLASSES))
        images_with += np.bincount(np.unique(m), minlength=len(CLASSES))
    assert (pixels > 0).all(), pixels  # all 6 classes appear
    objects = pixels[1:]
    assert objects.argmax() == 0  # disc (class 1) is the most common object
    assert objects.argmin() == 4  # star (class 5) is the rarest
    assert pixels[5] < 0.15 * pixels[1]  # well below the most common object class
    assert images_with[5] < 0.3 * images_with[1]
    assert pixels[0] > objects.sum()  # background dominates
    # object classes decrease down the frequency table, as in CLASS_FREQ
    assert images_with[1] > images_with[2] > images_with[3] > images_with[5]


def test_generate_writes_list_layout(synth_dir):
    assert (synth_dir / "classes.txt").read_text().split() == CLASSES
    meta = json.loads((synth_dir / "synthetic.json").read_text())
    assert meta == {"num_pool": 24, "num_val": 8, "size": 64, "seed": 0, "version": GENERATOR_VERSION}
    train, problems = read_list(synth_dir / "train.txt", synth_dir)
    assert problems == [] and len(train) == 24
    val, problems = read_list(synth_dir / "val.txt", synth_dir)
    assert problems == [] and len(val) == 8
    assert train[3].name == "images/train/00003"
    assert not {s.name for s in train} & {s.name for s in val}
    cfg = make_config(root=synth_dir)
    for s, (split, idx) in [(train[0], (0, 0)), (train[23], (0, 23)), (val[7], (1, 7))]:
        img, mask = generate_sample(0, split, idx, 64)
        np.testing.assert_array_equal(np.array(Image.open(s.image)), img)
        assert Image.open(s.mask).mode == "P"
        np.testing.assert_array_equal(read_mask(s.mask, len(CLASSES)), mask)
        checked = check_sample(s, cfg)
        assert (checked.width, checked.height) == (64, 64)
        np.testing.assert_array_equal(checked.mask, mask)
    # the palette PNG shows the VOC colours
    pal = Image.open(train[0].mask).getpalette()
    assert [tuple(pal[3 * i:3 * i + 3]) for i in range(6)] == voc_palette(6)


def test_generate_same_seed_identical_files(synth_dir, tmp_path):
    generate(tmp_path, num_pool=4, num_val=2, size=64, seed=0, progress=False)
    for rel in ["images/train/00000.png", "masks/train/00003.png", "images/val/00001.png"]:
        assert (tmp_path / rel).read_bytes() == (synth_dir / rel).read_bytes(), rel


def test_growing_num_pool_keeps_first_images(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    generate(small, num_pool=3, num_val=2, size=48, seed=1, progress=False)
    generate(big, num_pool=6, num_val=3, size=48, seed=1, progress=False)
    for i in range(3):
        for kind in ("images", "masks"):
            rel = f"{kind}/train/{i:05d}.png"
            assert (small / rel).read_bytes() == (big / rel).read_bytes()
    for i in range(2):
        assert (small / f"images/val/{i:05d}.png").read_bytes() == (big / f"images/val/{i:05d}.png").read_bytes()
    assert (big / "train.txt").read_text().startswith((small / "train.txt").read_text())
    assert len((big / "train.txt").read_text().splitlines()) == 6
    # another seed: other images
    other = tmp_path / "other"
    generate(other, num_pool=1, num_val=0, size=48, seed=2, progress=False)
    assert (other / "images/train/00000.png").read_bytes() != (small / "images/train/00000.png").read_bytes()


def test_ensure_generated_only_when_needed(tmp_path):
    cfg = config_from_file("demo", overrides=["synthetic.num_pool=3", "synthetic.num_val=2",
                                              "synthetic.size=32"])
    root = tmp_path / "data"
    pool, problems = read_split(cfg, root, "pool")
    assert problems == [] and len(pool) == 3
    assert len(read_split(cfg, root, "val")[0]) == 2
    stamp = (root / "images/train/00000.png").stat().st_mtime_ns
    ensure_generated(cfg, root)  # same settings: nothing rewritten
    assert (root / "images/train/00000.png").stat().st_mtime_ns == stamp
    cfg.synthetic.num_pool = 5
    ensure_generated(cfg, root)
    assert len(read_list(root / "train.txt", root)[0]) == 5
    assert json.loads((root / "synthetic.json").read_text())["num_pool"] == 5


@pytest.mark.parametrize("size", [32, 96])
def test_sizes(size):
    img, m = generate_sample(3, 0, 1, size)
    assert img.shape == (size, size, 3) and m.shape == (size, size)
    assert len(np.unique(m)) >= 2  # at least one object besides background
