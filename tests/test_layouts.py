"""Dataset layout readers on fixtures written in each layout's exact form, and the mask/image checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotassist.config import voc_palette
from annotassist.data.layouts import (check_sample, read_cityscapes, read_folders, read_list, read_split,
                                      read_voc, Sample)
from annotassist.data.masks import IGNORE, colours_to_ids, image_size, read_image, read_mask, write_mask
from annotassist.errors import DataError, Problem

from conftest import CAMVID, config_from_file, make_config, needs_camvid, save_png

RNG = np.random.default_rng(0)


def rgb(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def ids_mask(h: int = 24, w: int = 32, n: int = 6, border: bool = True) -> np.ndarray:
    m = RNG.integers(0, n, (h, w)).astype(np.uint8)
    if border:
        m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 255
    return m


def palette_png(mask: np.ndarray, path: Path, palette) -> Path:
    """A VOC-style palette PNG written directly with PIL (not with annotassist's own writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    flat = [0] * 768
    for i, c in enumerate(palette):
        flat[3 * i:3 * i + 3] = c
    flat[765:768] = [224, 224, 192]
    im.putpalette(flat)
    im.save(path)
    return path


# ---------------------------------------------------------------------------------------------------------
# PASCAL VOC


@pytest.fixture
def voc(tmp_path) -> tuple[Path, dict]:
    """JPEGImages/ for 6 ids; masks for 4 of them; train = 1,2,3; val = 4,6; 5 is in no split."""
    root = tmp_path / "VOC2012"
    pal = voc_palette(21)
    masks = {}
    (root / "JPEGImages").mkdir(parents=True)
    for k in range(1, 7):
        i = f"2007_00000{k}"
        Image.fromarray(rgb()).save(root / "JPEGImages" / f"{i}.jpg")
        if k != 3 and k != 5:
            masks[i] = ids_mask(n=21)
            palette_png(masks[i], root / "SegmentationClass" / f"{i}.png", pal)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000002\n2007_000003\n")
    (sets / "val.txt").write_text("2007_000004\n2007_000006\n\n")
    return root, masks


def test_voc_split_file(voc):
    voc_root, _ = voc
    samples, problems = read_voc(voc_root, "train")
    assert problems == []
    assert [s.name for s in samples] == ["2007_000001", "2007_000002", "2007_000003"]
    assert samples[0].image == voc_root / "JPEGImages" / "2007_000001.jpg"
    assert samples[0].mask == voc_root / "SegmentationClass" / "2007_000001.png"
    assert samples[2].mask is None  # no mask = unlabeled


def test_voc_palette_masks_read_as_ids_with_border(voc):
    voc_root, masks = voc
    cfg = config_from_file("voc")
    samples, _ = read_voc(voc_root, "train")
    checked = check_sample(samples[0], cfg)
    assert (checked.width, checked.height) == (32, 24)
    np.testing.assert_array_equal(checked.mask, masks["2007_000001"])
    assert (checked.mask[0] == IGNORE).all()
    assert check_sample(samples[2], cfg).mask is None


def test_voc_split_all_excludes_val(voc):
    voc_root, _ = voc
    cfg = config_from_file("voc", overrides=["dataset.pool=all", "dataset.val=val"])
    pool, problems = read_split(cfg, voc_root, "pool")
    assert problems == []
    assert [s.name for s in pool] == ["2007_000001", "2007_000002", "2007_000003", "2007_000005"]
    val, _ = read_split(cfg, voc_root, "val")
    assert [s.name for s in val] == ["2007_000004", "2007_000006"]
    assert all(s.mask is not None for s in val)
    assert [s.mask is None for s in pool] == [False, False, True, True]
    # without an evaluation set, "all" is every image
    cfg = config_from_file("voc", overrides=["dataset.pool=all", "dataset.val="])
    assert len(read_split(cfg, voc_root, "pool")[0]) == 6
    assert read_split(cfg, voc_root, "val") == ([], [])


def test_voc_missing_image_and_split_file(voc):
    voc_root, _ = voc
    (voc_root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000099\n")
    samples, problems = read_voc(voc_root, "train")
    assert [s.name for s in samples] == ["2007_000001"]
    assert len(problems) == 1 and "2007_000099" in problems[0].message
    with pytest.raises(DataError, match=r"trainaug\.txt: VOC split file not found"):
        read_voc(voc_root, "trainaug")
    with pytest.raises(DataError, match="JPEGImages"):
        read_voc(voc_root / "nothing", "train")


def test_voc_other_image_extension(voc):
    voc_root, _ = voc
    Image.fromarray(rgb()).save(voc_root / "JPEGImages" / "2007_000007.png")
    (voc_root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000007\n")
    samples, problems = read_voc(voc_root, "train")
    assert problems == [] and samples[0].image.name == "2007_000007.png"


# ---------------------------------------------------------------------------------------------------------
# Cityscapes


@pytest.fixture
def cityscapes(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "cityscapes"
    masks = {}
    for split, city, stem, with_mask in [("train", "aachen", "aachen_000000_000019", True),
                                         ("train", "aachen", "aachen_000001_000019", False),
                                         ("train", "bochum", "bochum_000000_000313", True),
                                         ("val", "frankfurt", "frankfurt_000000_000294", True)]:
        save_png(rgb(), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        if with_mask:
            m = ids_mask(n=19)
            m[1, 1:20] = np.arange(19)  # every train id appears
            masks[f"{split}/{city}/{stem}"] = m
            save_png(m, root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png")
            # the other gtFine files that sit next to it must not be taken for the mask
            save_png(m + 1, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root, masks


def test_cityscapes_reader(cityscapes):
    cityscapes_root, masks = cityscapes
    cfg = config_from_file("cityscapes")
    pool, problems = read_split(cfg, cityscapes_root, "pool")
    assert problems == []
    assert [s.name for s in pool] == ["train/aachen/aachen_000000_000019", "train/aachen/aachen_000001_000019",
                                      "train/bochum/bochum_000000_000313"]
    assert pool[1].mask is None
    assert pool[0].mask.name == "aachen_000000_000019_gtFine_labelTrainIds.png"
    for s in (pool[0], pool[2]):
        m = check_sample(s, cfg).mask
        np.testing.assert_array_equal(m, masks[s.name])
        assert set(np.unique(m)) == set(range(19)) | {255}
    val, _ = read_split(cfg, cityscapes_root, "val")
    assert [s.name for s in val] == ["val/frankfurt/frankfurt_000000_000294"]


def test_cityscapes_missing_split(cityscapes):
    cityscapes_root, _ = cityscapes
    with pytest.raises(DataError, match=r"leftImg8bit/test: not found"):
        read_cityscapes(cityscapes_root, "test")


# ---------------------------------------------------------------------------------------------------------
# list files


@pytest.fixture
def list_root(tmp_path) -> Path:
    root = tmp_path / "lists"
    for i in range(5):
        save_png(rgb(), root / "img" / f"{i}.png")
        save_png(ids_mask(), root / "ann" / f"{i}.png")
    return root


def test_list_two_and_one_columns_comments_blank_lines(list_root):
    (list_root / "train.txt").write_text(
        "# a comment\n\nimg/0.png ann/0.png\n   \nimg/1.png   ann/1.png  \nimg/2.png\n# img/3.png ann/3.png\n")
    samples, problems = read_list(list_root / "train.txt", list_root)
    assert problems == []
    assert samples == [Sample("img/0", list_root / "img/0.png", list_root / "ann/0.png"),
                       Sample("img/1", list_root / "img/1.png", list_root / "ann/1.png"),
                       Sample("img/2", list_root / "img/2.png", None)]


def test_list_problems_name_file_and_line(list_root):
    lst = list_root / "train.txt"
    lst.write_text("img/0.png ann/0.png\n"         # 1 ok
                   "img/9.png ann/0.png\n"         # 2 missing image
                   "img/1.png ann/9.png\n"         # 3 missing mask
                   "\n"                            # 4
                   "img/0.png ann/0.png\n"         # 5 duplicate of line 1
                   "img/2.png ann/2.png extra\n"   # 6 three fields
                   "img/3.png\n")                  # 7 ok, unlabeled
    samples, problems = read_list(lst, list_root)
    assert [s.name for s in samples] == ["img/0", "img/3"]
    assert [(p.file, p.line) for p in problems] == [(str(lst), 2), (str(lst), 3), (str(lst), 5), (str(lst), 6)]
    assert "image img/9.png not found" in problems[0].message
    assert "mask ann/9.png not found" in problems[1].message
    assert "listed twice (first on line 1)" in problems[2].message
    assert "3 fields" in problems[3].message
    assert str(problems[0]).startswith(f"{lst}:2: image img/9.png not found")


def test_list_file_missing(list_root):
    with pytest.raises(DataError, match=r"nope\.txt: list file not found"):
        read_list(list_root / "nope.txt", list_root)


def test_list_layout_through_read_split(list_root):
    (list_root / "train.txt").write_text("img/0.png ann/0.png\nimg/1.png\n")
    (list_root / "val.txt").write_text("img/4.png ann/4.png\n")
    cfg = make_config(root=list_root)
    assert [s.name for s in read_split(cfg, list_root, "pool")[0]] == ["img/0", "img/1"]
    assert [s.name for s in read_split(cfg, list_root, "val")[0]] == ["img/4"]


@needs_camvid
def test_real_camvid_list():
    samples, problems = read_list(CAMVID / "train.txt", CAMVID)
    assert problems == []
    assert len(samples) == 367
    assert len({s.name for s in samples}) == 367
    assert samples[0] == Sample("train/0001TP_006690", CAMVID / "train/0001TP_006690.png",
                                CAMVID / "trainannot/0001TP_006690.png")
    assert all(s.mask is not None for s in samples)
    val, problems = read_list(CAMVID / "val.txt", CAMVID)
    assert problems == [] and len(val) == 101
    assert not {s.name for s in samples} & {s.name for s in val}


@needs_camvid
def test_real_camvid_ignore_maps_to_255():
    cfg = config_from_file("camvid")
    path = CAMVID / "trainannot/0001TP_006690.png"
    raw = np.array(Image.open(path))
    assert (raw == 11).any()
    m = read_mask(path, cfg.num_classes, cfg.dataset.ignore_index, cfg.palette())
    assert m.dtype == np.uint8 and m.shape == (360, 480)
    np.testing.assert_array_equal(m == 255, raw == 11)
    np.testing.assert_array_equal(m[raw != 11], raw[raw != 11])
    # read with 255 as the ignore value, 11 is an unknown class id
    with pytest.raises(DataError, match=r"0001TP_006690\.png: class ids 11 are outside"):
        read_mask(path, cfg.num_classes)
    checked = check_sample(Sample("x", CAMVID / "train/0001TP_006690.png", path), cfg)
    assert (checked.width, checked.height) == (480, 360)


# ---------------------------------------------------------------------------------------------------------
# plain folders


@pytest.fixture
def folders_root(tmp_path) -> Path:
    root = tmp_path / "folders"
    for rel in ["a", "sub/b", "sub/deeper/c", "d"]:
        path = root / "images" / f"{rel}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb()).save(path)
    for rel in ["a", "sub/b", "sub/deeper/c", "orphan"]:
        save_png(ids_mask(), root / "masks" / f"{rel}.png")
    return root


def test_folders_matched_by_relative_path(folders_root):
    samples, problems = read_folders(folders_root, "images", "masks")
    assert problems == []
    by_name = {s.name: s for s in samples}
    assert sorted(by_name) == ["a", "d", "sub/b", "sub/deeper/c"]
    assert by_name["sub/deeper/c"].mask == folders_root / "masks/sub/deeper/c.png"
    assert by_name["sub/b"].image == folders_root / "images/sub/b.jpg"
    assert by_name["d"].mask is None


def test_folders_same_name_two_extensions(folders_root):
    Image.fromarray(rgb()).save(folders_root / "images" / "a.png")
    samples, problems = read_folders(folders_root, "images", "masks")
    assert len(samples) == 4
    assert len(problems) == 1 and "a" in problems[0].message and "images" in problems[0].file


def test_folders_through_read_split(folders_root, tmp_path):
    cfg = make_config(layout="folders", pool=".", val="", image_dir="images", mask_dir="masks")
    samples, _ = read_split(cfg, folders_root, "pool")
    assert len(samples) == 4
    # pool / val name subfolders of the root
    split_root = tmp_path / "split"
    (split_root / "train").mkdir(parents=True)
    (folders_root).rename(split_root / "train" / "x")
    cfg = make_config(layout="folders", pool="train/x", val="", image_dir="images", mask_dir="masks")
    assert len(read_split(cfg, split_root, "pool")[0]) == 4
    with pytest.raises(DataError, match="image folder not found"):
        read_folders(tmp_path / "none", "images", "masks")


# ---------------------------------------------------------------------------------------------------------
# masks and images


def test_read_mask_rgb_colour_masks(tmp_path):
    pal = voc_palette(6)
    ids = ids_mask(n=6)
    colour = np.zeros(ids.shape + (3,), dtype=np.uint8)
    for i, c in enumerate(pal):
        colour[ids == i] = c
    colour[ids == 255] = (224, 224, 192)
    p = save_png(colour, tmp_path / "colour.png")
    np.testing.assert_array_equal(read_mask(p, 6, palette=pal), ids)
    with pytest.raises(DataError, match=r"colour\.png: an RGB mask, but the config has no dataset\.palette"):
        read_mask(p, 6)
    colour[3, 3] = (1, 2, 3)
    save_png(colour, p)
    with pytest.raises(DataError, match=r"colour\.png: colours \(1, 2, 3\) are not in dataset\.palette"):
        read_mask(p, 6, palette=pal)


def test_colours_to_ids_direct():
    pal = [(10, 20, 30), (40, 50, 60)]
    arr = np.array([[[10, 20, 30], [40, 50, 60], [224, 224, 192]]], dtype=np.uint8)
    np.testing.assert_array_equal(colours_to_ids(arr, pal), [[0, 1, 255]])


def test_read_mask_unknown_class_ids_name_the_file(tmp_path):
    m = ids_mask(n=6)
    m[2, 2], m[3, 3] = 7, 200
    p = save_png(m, tmp_path / "bad_ids.png")
    with pytest.raises(DataError) as e:
        read_mask(p, 6)
    assert str(e.value).startswith(f"{p}: class ids 7, 200 are outside")
    assert read_mask(p, 201).max() == 255


def test_read_mask_palette_png_from_write_mask(tmp_path):
    m = ids_mask(n=6)
    p = tmp_path / "w.png"
    write_mask(m, p, voc_palette(6))
    assert Image.open(p).mode == "P"
    np.testing.assert_array_equal(read_mask(p, 6), m)
    assert not list(tmp_path.glob(".tmp-*"))


def test_read_mask_16_bit_and_unsupported_modes(tmp_path):
    m = ids_mask(n=6).astype(np.uint16)
    p = tmp_path / "16.png"
    Image.fromarray(m).save(p)
    np.testing.assert_array_equal(read_mask(p, 6), m.astype(np.uint8))
    la = Image.fromarray(ids_mask(n=6)).convert("LA")
    la.save(tmp_path / "la.png")
    with pytest.raises(DataError, match=r"la\.png: mask mode LA is not supported"):
        read_mask(tmp_path / "la.png", 6)


def test_mask_size_mismatch_via_check_sample(tmp_path):
    img = save_png(rgb(24, 32), tmp_path / "img.png")
    mask = save_png(ids_mask(24, 30), tmp_path / "mask.png")
    cfg = make_config()
    with pytest.raises(DataError) as e:
        check_sample(Sample("img", img, mask), cfg)
    msg = str(e.value)
    assert msg.startswith(str(mask))
    assert "30x24" in msg and "32x24" in msg


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "text"])
def test_corrupt_image_names_the_file(tmp_path, kind):
    good = save_png(rgb(64, 64), tmp_path / "good.png")
    data = good.read_bytes()
    bad = tmp_path / f"bad_{kind}.png"
    bad.write_bytes({"truncated": data[: len(data) // 2], "random": RNG.bytes(2000), "empty": b"",
                     "text": b"not an image at all\n"}[kind])
    with pytest.raises(DataError) as e:
        image_size(bad)
    assert str(e.value).startswith(f"{bad}: cannot be read as an image")
    with pytest.raises(DataError, match=str(bad)):
        read_image(bad)
    with pytest.raises(DataError, match=rf"{bad}: cannot be read as a mask image"):
        read_mask(bad, 6)
    with pytest.raises(DataError, match=str(bad)):
        check_sample(Sample("bad", bad, None), make_config())
    # a corrupt mask next to a good image names the mask
    with pytest.raises(DataError, match=str(bad)):
        check_sample(Sample("good", good, bad), make_config())


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png: file not found"):
        image_size(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"gone\.png: mask file not found"):
        read_mask(tmp_path / "gone.png", 6)


def test_read_image_converts_to_rgb(tmp_path):
    p = tmp_path / "grey.png"
    Image.fromarray(np.full((5, 7), 9, dtype=np.uint8)).save(p)
    im = read_image(p)
    assert im.mode == "RGB" and im.size == (7, 5)
    assert image_size(p) == (7, 5)


def test_problem_str():
    assert str(Problem("a.txt", "bad", "fix it", 3)) == "a.txt:3: bad (fix it)"
    assert str(Problem("a.png", "bad")) == "a.png: bad"
