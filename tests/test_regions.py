"""Region mode (acquire.unit: region): region scores on hand-made maps, selection with the spread penalty, partial
masks in the pool (keep inside, report outside, merge, refuse twice, migrate an old pool), training and export
with ignore outside, real CamVid superpixels, and a region loop killed in scoring and in the pull."""
from __future__ import annotations

import hashlib
import signal
import sqlite3

import numpy as np
import pytest
import torch

from annotassist.acquire import regions
from annotassist.acquire.scores import ScoreInput
from annotassist.acquire.strategies import standardize01
from annotassist.data.masks import IGNORE, read_mask
from annotassist.errors import AnnotassistError, ConfigError, WorkspaceError
from annotassist.export import export
from annotassist.train.losses import cross_entropy
from annotassist.data.datasets import SemiDataset
from annotassist.workspace import Workspace

from conftest import CAMVID, config_from_file, make_config, needs_camvid
from test_loop import loop, snapshot


def quadrants(h: int, w: int) -> np.ndarray:
    """A hand-made region map: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    seg = np.zeros((h, w), np.int32)
    seg[:, w // 2:] += 1
    seg[h // 2:, :] += 2
    return seg


def score_input(probs: torch.Tensor, reliability=None, **cfg_sets) -> ScoreInput:
    cfg = make_config([f"{k}={v}" for k, v in cfg_sets.items()])
    c = probs.shape[0]
    return ScoreInput(probs=probs, image=torch.zeros(3, *probs.shape[1:]), cfg=cfg, class_weights=torch.ones(c),
                      class_shares=torch.full((c,), 1 / c), reliability=reliability)


def one_hot_probs(labels: np.ndarray, c: int, peak: float) -> torch.Tensor:
    """Probabilities with `peak` on the given class and the rest spread evenly."""
    p = np.full((c, *labels.shape), (1 - peak) / (c - 1), np.float32)
    np.put_along_axis(p, labels[None].astype(np.int64), peak, axis=0)
    return torch.from_numpy(p)


# -- region scores -------------------------------------------------------------------------------------------

def test_region_scores_on_hand_made_maps():
    h = w = 32
    seg = quadrants(h, w)
    c = 4
    labels = np.zeros((h, w), np.int64)
    labels[16:, :] = 1  # bottom half class 1
    labels[16:, 24:] = 2  # region 3 holds two classes: 1 and 2 (impure)
    probs = one_hot_probs(labels, c, 0.99)
    probs[:, :16, 16:] = one_hot_probs(labels[:16, 16:], c, 0.4)  # region 1: the model is unsure
    probs[:, 16:, 16:] = one_hot_probs(labels[16:, 16:], c, 0.6)  # region 3: unsure and impure
    reliability = torch.tensor([[0.9, 0.2], [0.5, 0.7]])  # one 16x16 cell per quadrant
    x = score_input(probs, reliability)

    ca = regions.REGION_SCORES["class_aware"](x, seg)
    assert ca[0] == 0 and ca[2] == 0  # confident everywhere: every pixel kept
    assert ca[1] == pytest.approx(1.0) and ca[3] == pytest.approx(1.0)  # below the gate: nothing kept

    rr = regions.REGION_SCORES["region_relevance"](x, seg)
    np.testing.assert_allclose(rr, [0.1, 0.8, 0.5, 0.3], atol=1e-6)
    assert np.isnan(regions.REGION_SCORES["region_relevance"](score_input(probs), seg)).all()  # no discriminator

    imp = regions.REGION_SCORES["impurity"](x, seg)
    assert imp[0] == pytest.approx(0) and imp[1] == pytest.approx(0)  # one predicted class: pure
    assert imp[3] > 0.1 and imp[3] == imp.max()

    rnd = regions.REGION_SCORES["random"](x, seg)
    assert rnd.shape == (4,) and np.array_equal(rnd, regions.REGION_SCORES["random"](x, seg))

    # the dssn strategy ranks the unsure, impure, unreliable region first and the confident reliable one last
    base = regions.REGION_STRATEGIES["dssn"]({"class_aware": ca, "region_relevance": rr, "impurity": imp}, x.cfg)
    assert int(np.argmax(base)) in (1, 3) and int(np.argmin(base)) == 0

    # expected correction cost: 1 - p1 per pixel, averaged over the region
    cost = regions.REGION_SCORES["expected_cost"](x, seg)
    np.testing.assert_allclose(cost, [0.01, 0.6, 0.01, 0.4], atol=1e-5)
    # dssn_cost: the same gain minus the standardised cost, so the dearest region (1) drops below region 3
    v = {"class_aware": ca, "region_relevance": rr, "impurity": imp, "expected_cost": cost}
    cost_aware = regions.REGION_STRATEGIES["dssn_cost"](v, x.cfg)
    np.testing.assert_allclose(cost_aware, base - x.cfg.acquire.cost_weight * standardize01(cost), atol=1e-6)
    assert cost_aware[3] > cost_aware[1] and regions.resolve_region("dssn_cost")[1][-1] == "expected_cost"


def test_class_aware_region_score_uses_the_class_weights():
    seg = quadrants(32, 32)
    labels = np.where(seg >= 2, 1, 0)  # top class 0, bottom class 1, all unsure
    x = score_input(one_hot_probs(labels, 3, 0.5))
    x.class_weights = torch.tensor([1.0, 3.0, 1.0])  # class 1 is rare in the labeled pool
    ca = regions.REGION_SCORES["class_aware"](x, seg)
    np.testing.assert_allclose(ca, [1, 1, 3, 3], atol=1e-6)


def test_unknown_region_strategy_names_the_known_ones():
    with pytest.raises(AnnotassistError, match="class_aware.*dssn|dssn.*random"):
        regions.resolve_region("coreset")


# -- selection ------------------------------------------------------------------------------------------------

def test_greedy_selection_spreads_over_images():
    items = [(1, r, 1.0 - 0.01 * r, 10) for r in range(4)] + [(2, r, 0.9 - 0.01 * r, 10) for r in range(4)]
    # no penalty: the hard image takes everything
    assert [i for i, _, _ in regions.greedy_regions(items, 3, None, 0.0)] == [1, 1, 1]
    # with the penalty, image 2's best region beats image 1's second (0.99 * 0.7 < 0.9)
    picked = regions.greedy_regions(items, 3, None, 0.3)
    assert [(i, r) for i, r, _ in picked] == [(1, 0), (2, 0), (1, 1)]
    # a pixel budget stops once it is reached
    assert len(regions.greedy_regions(items, None, 25, 0.3)) == 3
    assert len(regions.greedy_regions(items, 100, None, 0.3)) == 8  # never more than there is


def _queue_regions(ws: Workspace, image_id: int, picks: list[int], round_: int = 0) -> None:
    ws.record_region_selection(round_, {image_id: picks}, {image_id: 1.0}, "dssn")


@pytest.fixture
def region_ws(synth_ws):
    """The synced small set with quadrant regions on every pool image and a pseudo mask of class 1."""
    for rec in synth_ws.images("pool"):
        synth_ws.set_superpixels(rec.id, quadrants(rec.height, rec.width))
    return synth_ws


def _store_scores(ws: Workspace, round_: int = 0) -> None:
    rows = []
    for k, rec in enumerate(ws.images("pool", state="unlabeled")):
        v = np.array([0.1, 0.2, 0.3, 0.4], np.float32) + rec.id * 0.001 + (1.0 if k == 0 else 0.0)  # one hard image
        rows += [(rec.id, "class_aware", v), (rec.id, "region_relevance", v), (rec.id, "impurity", v),
                 (rec.id, "random", v[::-1].copy())]
    ws.write_region_scores(round_, rows)


def test_select_regions_queues_regions_and_never_asks_a_reviewed_region_again(region_ws):
    ws = region_ws
    cfg = make_config(["acquire.unit=region", "acquire.region_spread=0"], initial_labeled=4)
    _store_scores(ws)
    sel = regions.select_regions(ws, cfg, "dssn", budget=3, round_=0)
    assert sel.regions == 3 and sel.message == ""
    (image_id, picked), = sel.picks.items()  # no spread: the best image's three best regions
    assert picked == [3, 2, 1]
    rec = ws.image(image_id)
    assert rec.state == "queued" and ws.open_region_query(image_id) == (0, [1, 2, 3])
    truth = ws.read_oracle(image_id)
    ws.add_partial(image_id, truth, 0, source="test")
    # round 1: the image is back in the pool, only its unreviewed region can be asked
    _store_scores(ws, 1)
    sel = regions.select_regions(ws, cfg, "dssn", budget=200, round_=1)
    assert "more than the" in sel.message
    assert sel.picks[image_id] == [0]
    assert all(len(v) == 4 for k, v in sel.picks.items() if k != image_id)


def test_an_image_handed_back_unanswered_withdraws_its_region_query(region_ws):
    """A region task deleted in Label Studio returns its image to the pool: its query must not stay open (the
    editor and the next push would ask the old regions again), and the regions count as never reviewed."""
    ws = region_ws
    image_id = ws.images("pool", state="unlabeled")[0].id
    _queue_regions(ws, image_id, [0, 2])
    ws.set_state([image_id], "in_review", reason="pushed")
    assert ws.open_region_query(image_id) == (0, [0, 2])
    ws.set_state([image_id], "unlabeled", reason="Label Studio task 7 was deleted")
    assert ws.open_region_query(image_id) is None and ws.reviewed_regions(image_id) == set()
    assert ws.last_event("state")["region_queries_withdrawn"] == 1
    # an answered query stays: only a waiting one is withdrawn
    _queue_regions(ws, image_id, [1], round_=1)
    ws.add_partial(image_id, ws.read_oracle(image_id), 1, source="test")
    ws.set_state([image_id], "queued")
    ws.set_state([image_id], "unlabeled")
    assert ws.reviewed_regions(image_id) == {1}


def test_select_regions_without_scores_says_which_command_makes_them(region_ws):
    cfg = make_config(["acquire.unit=region"], initial_labeled=4)
    with pytest.raises(AnnotassistError, match="score --unit region"):
        regions.select_regions(region_ws, cfg, "dssn", round_=0)


def test_bad_region_budgets_are_config_errors():
    with pytest.raises(ConfigError, match="region_budget"):
        make_config(["acquire.region_budget=0"])
    with pytest.raises(ConfigError, match="region_spread"):
        make_config(["acquire.region_spread=1.5"])
    with pytest.raises(ConfigError, match="unit"):
        make_config(["acquire.unit=pixel"])


# -- partial masks in the pool ----------------------------------------------------------------------------------

def test_partial_save_keeps_only_the_queried_regions_and_reports_the_rest(region_ws):
    ws = region_ws
    rec = ws.images("pool", state="unlabeled")[0]
    h, w = rec.height, rec.width
    _queue_regions(ws, rec.id, [0, 3])
    ws.set_state([rec.id], "in_review", reason="test")
    answer = np.full((h, w), 2, np.uint8)  # the person painted class 2 everywhere
    save = ws.add_partial(rec.id, answer, 0, source="test", changed_pixels=5, changed_regions=1)
    inside = np.isin(quadrants(h, w), [0, 3])
    assert save.reviewed_pixels == inside.sum() and save.regions == 2
    assert save.outside_pixels == (~inside).sum()  # handed back outside the regions: not stored, reported
    stored = read_mask(ws.partial_mask(rec.id).path, ws.config.num_classes)
    assert (stored[inside] == 2).all() and (stored[~inside] == IGNORE).all()
    assert ws.image(rec.id).state == "unlabeled" and ws.open_region_query(rec.id) is None
    with pytest.raises(WorkspaceError, match="already saved"):
        ws.add_partial(rec.id, answer, 0)
    assert len(ws.masks(rec.id, "partial")) == 1

    # a later round asks another region: merged into the same partial mask, reviewed pixels add up
    _queue_regions(ws, rec.id, [1], round_=1)
    answer2 = np.full((h, w), 3, np.uint8)
    ws.add_partial(rec.id, answer2, 1, source="test")
    merged = read_mask(ws.partial_mask(rec.id).path, ws.config.num_classes)
    seg = quadrants(h, w)
    assert (merged[np.isin(seg, [0, 3])] == 2).all() and (merged[seg == 1] == 3).all()
    assert (merged[seg == 2] == IGNORE).all()
    assert ws.reviewed_regions(rec.id) == {0, 1, 3}
    reviewed, total = ws.reviewed_pixels()
    labeled_px = sum(r.width * r.height for r in ws.images("pool", state="labeled"))
    assert reviewed == labeled_px + 3 * (h // 2) * (w // 2)
    assert total == sum(r.width * r.height for r in ws.images("pool"))

    # it trains as labeled data (255 outside) and stays in the unlabeled stream
    assert rec.name in {s.name for s in ws.labeled_samples()}
    assert rec.name in {s.name for s in ws.unlabeled_samples()}
    assert ws.class_pixels()[3] >= (h // 2) * (w // 2)


def test_training_draws_a_partial_mask_by_its_reviewed_share(region_ws):
    """Three reviewed quadrants of 4 labeled + 1 partial images: the partial one carries weight 3/4 and is drawn
    in proportion (3/4 of a whole image's draws), deterministically for a seed; whole labels alone keep the
    plain shuffle (each image once per pass)."""
    ws = region_ws
    rec = ws.images("pool", state="unlabeled")[0]
    h, w = rec.height, rec.width
    _queue_regions(ws, rec.id, [0, 1, 3])
    ws.add_partial(rec.id, ws.read_oracle(rec.id), 0, source="test")
    samples = ws.labeled_samples()
    weights = {s.name: s.weight for s in samples}
    assert weights.pop(rec.name) == pytest.approx(3 * (h // 2) * (w // 2) / (h * w))
    assert set(weights.values()) == {1.0} and len(weights) == 4

    def draws(items, seed=0):
        ds = SemiDataset(items, [], ws.config.num_classes, 32, seed=seed)
        return [items[ds._labeled_index(k)].name for k in range(5000)]

    picked = draws(samples)
    share = picked.count(rec.name) / len(picked)
    assert share == pytest.approx(0.75 / 4.75, abs=0.02)
    assert picked == draws(samples) and picked != draws(samples, seed=1)
    whole = [s for s in samples if s.name != rec.name]
    assert sorted(draws(whole)[:4]) == sorted(s.name for s in whole)  # one pass = each image once


def test_partial_save_of_the_wrong_size_is_refused_and_loses_nothing(region_ws):
    ws = region_ws
    rec = ws.images("pool", state="unlabeled")[0]
    _queue_regions(ws, rec.id, [0])
    with pytest.raises(Exception, match="must match"):
        ws.add_partial(rec.id, np.zeros((rec.height + 1, rec.width), np.uint8), 0)
    assert ws.open_region_query(rec.id) == (0, [0]) and ws.partial_mask(rec.id) is None


def test_an_old_pool_gains_the_partial_kind_and_keeps_its_masks(synth_ws):
    root = synth_ws.root
    before = [(m.id, m.kind, m.path.name) for r in synth_ws.images(None) for m in synth_ws.masks(r.id)]
    synth_ws.close()
    # make the masks table as annotassist wrote it before region mode: no 'partial' kind, no reviewed_pixels
    db = sqlite3.connect(root / "pool.sqlite")
    db.executescript("""
        ALTER TABLE masks RENAME TO masks_new;
        CREATE TABLE masks (id INTEGER PRIMARY KEY AUTOINCREMENT, image_id INTEGER NOT NULL REFERENCES images (id),
            kind TEXT NOT NULL CHECK (kind IN ('ground_truth', 'pseudo', 'human')), path TEXT NOT NULL, round INTEGER,
            class_pixels TEXT NOT NULL, changed_pixels INTEGER, changed_regions INTEGER, source TEXT,
            created_at REAL NOT NULL);
        INSERT INTO masks SELECT id, image_id, kind, path, round, class_pixels, changed_pixels, changed_regions,
            source, created_at FROM masks_new;
        DROP TABLE masks_new; DROP TABLE region_queries; DROP TABLE superpixels; DROP TABLE region_scores;""")
    db.commit()
    db.close()
    with Workspace(root) as ws:
        after = [(m.id, m.kind, m.path.name) for r in ws.images(None) for m in ws.masks(r.id)]
        assert after == before
        rec = ws.images("pool", state="unlabeled")[0]
        ws.set_superpixels(rec.id, quadrants(rec.height, rec.width))
        _queue_regions(ws, rec.id, [2])
        ws.add_partial(rec.id, np.ones((rec.height, rec.width), np.uint8), 0)
        assert ws.partial_mask(rec.id).reviewed_pixels == (rec.height // 2) * (rec.width // 2)


def test_a_batch_with_no_reviewed_pixel_trains_on_nothing_not_nan():
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = cross_entropy(logits, torch.full((2, 8, 8), IGNORE, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all() and (logits.grad == 0).all()
    target = torch.full((2, 8, 8), IGNORE, dtype=torch.long)
    target[0, :4] = 1  # a partial mask: only the reviewed half counts
    full = torch.nn.functional.cross_entropy(logits[:1, :, :4], target[:1, :4])
    assert cross_entropy(logits, target).item() == pytest.approx(full.item(), rel=1e-5)


def test_export_writes_partial_masks_with_ignore_outside_and_says_so(region_ws, tmp_path):
    ws = region_ws
    rec = ws.images("pool", state="unlabeled")[0]
    _queue_regions(ws, rec.id, [1])
    ws.add_partial(rec.id, np.full((rec.height, rec.width), 2, np.uint8), 0)
    summary = export(ws, tmp_path / "out", progress=False)
    assert "partial_note" in summary and "255" in summary["partial_note"]
    partial = (tmp_path / "out" / "partial.txt").read_text().split("\n")
    line, = [x for x in partial if x]
    image_rel, mask_rel = line.split()
    mask = np.array(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "out" / mask_rel))
    seg = quadrants(rec.height, rec.width)
    assert (mask[seg == 1] == 2).all() and (mask[seg != 1] == 255).all()
    assert image_rel in (tmp_path / "out" / "unlabeled.txt").read_text()
    assert image_rel not in (tmp_path / "out" / "labeled.txt").read_text()


# -- superpixels on real frames ----------------------------------------------------------------------------------

@needs_camvid
def test_superpixels_of_a_real_camvid_frame_follow_its_objects():
    from PIL import Image

    cfg = config_from_file("camvid", ["acquire.superpixels=150"])
    name = (CAMVID / "train.txt").read_text().split()[0]
    frame = Image.open(CAMVID / name).convert("RGB").resize((240, 180), Image.BILINEAR)
    truth = np.array(Image.open(CAMVID / (CAMVID / "train.txt").read_text().split()[1])
                     .resize((240, 180), Image.NEAREST))
    image = torch.from_numpy(np.array(frame)).permute(2, 0, 1).float() / 255
    seg = regions.compute_superpixels(image, cfg)
    n = int(seg.max()) + 1
    assert seg.shape == (180, 240) and 75 <= n <= 225
    assert set(np.unique(seg)) == set(range(n))  # no gaps in the ids
    # SLIC follows edges: most pixels sit in a region whose majority class is their own
    valid = truth != 255
    hist = np.zeros((n, 256), np.int64)
    np.add.at(hist, (seg[valid], truth[valid]), 1)
    purity = hist.max(axis=1).sum() / valid.sum()
    assert purity > 0.85, purity


def test_superpixels_are_made_again_when_the_image_size_changed(region_ws):
    ws = region_ws
    rec = ws.images("pool")[0]
    cfg = make_config(["acquire.superpixels=20"])
    image = torch.rand(3, 48, 40)
    notes = []
    seg = regions.stored_superpixels(ws, rec.id, image, cfg, log=notes.append)
    assert seg.shape == (48, 40) and len(notes) == 1 and "computed again" in notes[0] and rec.name in notes[0]
    assert ws.superpixels(rec.id).shape == (48, 40)
    again = regions.stored_superpixels(ws, rec.id, image, cfg, log=notes.append)
    assert np.array_equal(again, seg) and len(notes) == 1  # stored: not recomputed, not said twice


# -- the loop in region mode, killed in scoring and in the pull ----------------------------------------------------

REGION = ["--unit", "region", "--set", "acquire.region_budget=6", "--set", "acquire.superpixels=12"]


def region_snapshot(ws_path) -> dict:
    snap = snapshot(ws_path)
    db = sqlite3.connect(ws_path / "pool.sqlite")
    snap["queries"] = sorted(db.execute("SELECT round, image_id, regions, status FROM region_queries").fetchall())
    snap["superpixels"] = sorted((i, hashlib.sha256(d).hexdigest()) for i, d in
                                 db.execute("SELECT image_id, data FROM superpixels"))
    snap["region_scores"] = sorted((r, i, n, hashlib.sha256(d).hexdigest()) for r, i, n, d in
                                   db.execute("SELECT round, image_id, name, data FROM region_scores"))
    db.close()
    return snap


def test_region_loop_killed_in_scoring_and_in_the_pull_reruns_to_the_same_pool(tmp_path):
    clean = tmp_path / "clean"
    r = loop(clean, *REGION)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "regions asked" in r.stdout
    want = region_snapshot(clean)
    partials = [m for masks in want["masks"].values() for m in masks if m[0] == "partial"]
    last = max(q[0] for q in want["queries"])  # the last round's queries wait for the next person
    assert partials and all(q[3] == ("queued" if q[0] == last else "done") for q in want["queries"])
    assert {q[0] for q in want["queries"]} == {0, 1, 2}  # every round asked regions

    ws = tmp_path / "killed"
    for point in ("score.batch:2", "pull.image:2"):
        r = loop(ws, *REGION, kill_at=point)
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
    r = loop(ws, *REGION)
    assert r.returncode == 0, r.stderr[-3000:]
    assert region_snapshot(ws) == want  # nothing doubled, nothing lost
