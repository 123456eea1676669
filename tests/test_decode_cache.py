"""The decode cache: same tensors as decoding every time, hits, and a changed image never served stale."""
from __future__ import annotations

import os
import shutil

import numpy as np
import torch
from PIL import Image

from annotassist.data.cache import DecodeCache
from annotassist.data.datasets import EvalDataset, ImageDataset, SemiDataset
from annotassist.data.layouts import read_list
from annotassist.data.masks import file_sha256


def _splits(root):
    samples = read_list(root / "train.txt", root)[0]
    return samples[:4], [type(s)(s.name, s.image, None) for s in samples[4:12]]


def test_cached_items_equal_decoding_every_time(synth_dir):
    labeled, unlabeled = _splits(synth_dir)
    val = read_list(synth_dir / "val.txt", synth_dir)[0][:3]
    for scale in (1.0, 0.5):
        cache = DecodeCache(10**8)
        cache.prefill([s.image for s in labeled + unlabeled + val], [s.mask for s in labeled + val], scale, 6)
        plain = SemiDataset(labeled, unlabeled, 6, 48, image_scale=scale, seed=3)
        cached = SemiDataset(labeled, unlabeled, 6, 48, image_scale=scale, seed=3, cache=cache,
                             float_images=False)
        for k in range(5):
            a, b = plain[k], cached[k]
            assert a.keys() == b.keys()
            for key in a:
                if b[key].dtype == torch.uint8 and b[key].ndim == 3 and key not in ("box1", "box2"):
                    assert torch.equal(a[key], b[key].float().div_(255.0)), key  # uint8 until the trainer
                else:
                    assert torch.equal(a[key], b[key]), key
        for i in range(3):
            x1, y1 = EvalDataset(val, 6, scale)[i]
            x2, y2 = EvalDataset(val, 6, scale, cache=cache)[i]
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
            items = [(i, val[i].image)]
            assert torch.equal(ImageDataset(items, scale)[0][1], ImageDataset(items, scale, cache)[0][1])


def test_prefill_decodes_once_then_hits(synth_dir):
    labeled, unlabeled = _splits(synth_dir)
    images = [s.image for s in labeled + unlabeled]
    cache = DecodeCache(10**8)
    cache.prefill(images, [s.mask for s in labeled], 0.5, 6)
    assert cache.misses == len(images) + len(labeled) and cache.hits == 0
    ds = SemiDataset(labeled, unlabeled, 6, 32, image_scale=0.5, cache=cache, float_images=False)
    for k in range(len(ds)):
        ds[k]
    assert cache.misses == len(images) + len(labeled)  # nothing decoded again
    assert cache.hits == len(ds) * 3 + len(ds)  # labeled image + mask, unlabeled image, CutMix partner
    assert cache.known[str(images[0])] == file_sha256(images[0])  # keyed by the content hash the pool stores
    # a second round over the same files: hashed again, decoded never
    cache.prefill(images, [s.mask for s in labeled], 0.5, 6)
    assert cache.misses == len(images) + len(labeled)


def test_a_changed_image_is_decoded_afresh(synth_copy):
    labeled, unlabeled = _splits(synth_copy)
    target = unlabeled[0].image
    cache = DecodeCache(10**8)
    cache.prefill([s.image for s in labeled + unlabeled], [s.mask for s in labeled], 1.0, 6)
    before = cache.image(target).clone()
    stat = os.stat(target)
    # new content, same path, same size, same modification time: only the content hash can tell
    arr = np.asarray(Image.open(target).convert("RGB")).copy()
    arr[:8, :8] = 255 - arr[:8, :8]
    Image.fromarray(arr).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # the next round hashes the files again: the new content is a new key
    cache.prefill([s.image for s in labeled + unlabeled], [s.mask for s in labeled], 1.0, 6)
    after = cache.image(target)
    assert torch.equal(after, torch.from_numpy(arr).permute(2, 0, 1))
    assert not torch.equal(after, before)
    # and the stale entry is gone: nothing of a file that is no longer part of the round is kept
    assert cache.bytes == sum(t.numel() for t in cache.items.values())
    assert len([k for k in cache.items if k[0] == "image"]) == len(labeled) + len(unlabeled)
    # outside a prefill (a file not hashed this round) every access hashes the file
    other = synth_copy / "outside.png"
    shutil.copy(unlabeled[1].image, other)
    first = cache.image(other).clone()
    shutil.copy(unlabeled[2].image, other)
    assert not torch.equal(cache.image(other), first)
    assert torch.equal(cache.image(other), cache.image(unlabeled[2].image))


def test_a_changed_image_in_a_workspace_gets_a_new_key(synth_ws):
    rec = synth_ws.images("pool", state="unlabeled")[0]
    cache = DecodeCache(10**8)
    samples = synth_ws.unlabeled_samples()
    cache.prefill([s.image for s in samples], [], 1.0, 6)
    assert cache.known[str(rec.image_path)] == rec.sha256
    old = cache.image(rec.image_path).clone()
    arr = np.asarray(Image.open(rec.image_path).convert("RGB")).copy()
    arr[10:20, 10:20] = 0
    Image.fromarray(arr).save(rec.image_path)
    from annotassist.importer import import_dataset
    report = import_dataset(synth_ws, progress=False)
    assert rec.name in report.changed
    new_sha = synth_ws.image(rec.id).sha256
    assert new_sha != rec.sha256
    cache.prefill([s.image for s in synth_ws.unlabeled_samples()], [], 1.0, 6)
    assert cache.known[str(rec.image_path)] == new_sha
    assert torch.equal(cache.image(rec.image_path), torch.from_numpy(arr).permute(2, 0, 1))
    assert not torch.equal(cache.image(rec.image_path), old)


def test_a_full_cache_still_serves_every_image(synth_dir):
    labeled, unlabeled = _splits(synth_dir)
    images = [s.image for s in labeled + unlabeled]
    one = 3 * 64 * 64
    cache = DecodeCache(3 * one)  # room for three images
    cache.prefill(images, [s.mask for s in labeled], 1.0, 6)
    assert len(cache.items) == 3 and cache.bytes == 3 * one and cache.full
    for p in images:  # the rest are decoded every time, as without a cache
        assert torch.equal(cache.image(p), torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(
            2, 0, 1))
    assert len(cache.items) == 3
