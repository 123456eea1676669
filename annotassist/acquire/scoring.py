"""The scoring pass: run the round's model over the pool once and store every score an image needs.

Streams: one batch of probability maps at a time, written to the workspace as soon as it is scored, so memory
stays flat however large the pool. Resumable: images that already have every requested score (and an
embedding) for this round are skipped. Shardable: under torchrun each rank scores every world-th batch and
writes a shard file; rank 0, the pool's only writer, folds them in.
"""
from __future__ import annotations

import base64
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import faults
from ..data.cache import shared_cache
from ..data.datasets import image_loader
from ..errors import AnnotassistError
from ..progress import progress as progress_bar
from ..runtime import distributed as dist_utils
from ..runtime import precision, threads
from ..runtime.checkpoint import load_model
from ..runtime.summary import scoring_line
from .scores import SCORES, ScoreInput, class_weights

if TYPE_CHECKING:
    from ..workspace import Workspace

MODEL_FREE = {"random"}  # scores that need no forward pass


@dataclass
class ScoringReport:
    round: int
    scored: int = 0
    embedded: int = 0
    skipped: int = 0
    nan: dict[str, list[str]] = field(default_factory=dict)  # score name -> image names with a NaN score
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return (self.scored + self.embedded) / self.seconds if self.seconds > 0 else 0.0


def _encode(a: np.ndarray) -> dict:
    a = np.asarray(a, dtype=np.float16)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _decode(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.float16).reshape(d["shape"]).astype(np.float32)


def _encode32(a: np.ndarray) -> dict:
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _decode32(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.float32).reshape(d["shape"])


def _encode_seg(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "data": base64.b64encode(np.asarray(a, dtype=np.uint16).tobytes()).decode()}


def _decode_seg(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.uint16).reshape(d["shape"]).astype(np.int32)


def _pending(ws: Workspace, round_: int, names: list[str], region_names: list[str]) -> tuple[list, list, int]:
    """(unlabeled records to score, labeled records to embed, how many were already done)."""
    have = ws.scores(round_)
    have_regions = ws.region_scores(round_) if region_names else {}
    emb = ws.embedded_ids(round_)
    to_score, to_embed, done = [], [], 0
    for rec in ws.images("pool", state="unlabeled"):
        if rec.id in emb and all(n in have.get(rec.id, {}) for n in names) and \
                all(n in have_regions.get(rec.id, {}) for n in region_names):
            done += 1
        else:
            to_score.append(rec)
    for rec in ws.images("pool", state="labeled"):
        if rec.id in emb:
            done += 1
        else:
            to_embed.append(rec)
    return to_score, to_embed, done


def score_pool(ws: Workspace, cfg, names: list[str], *, round_: int | None = None, device: str | None = None,
               batch_size: int | None = None, num_workers: int | None = None, progress: bool = True,
               limit_batches: int | None = None, region_names: list[str] = ()) -> ScoringReport:
    """Score the unlabeled pool (and embed the labeled images) with the round's model. `region_names`
    (region mode): region scores too, over each image's stored superpixels (made and stored when missing)."""
    from .regions import REGION_SCORES, stored_superpixels

    region_names = list(region_names)
    unknown = [n for n in names if n not in SCORES] + [n for n in region_names if n not in REGION_SCORES]
    if unknown:
        raise AnnotassistError(f"unknown score(s) {', '.join(unknown)} (known: {', '.join(sorted(SCORES))}; "
                               f"region scores: {', '.join(sorted(REGION_SCORES))})")
    if round_ is None:
        round_, model_path = ws.latest_model()
    else:
        info = ws.round_info(round_)
        if info is None or not info["checkpoint"]:
            raise AnnotassistError(f"round {round_} of {ws.root} has no trained model; run 'annotassist train "
                                   f"--workspace {ws.root}'")
        model_path = Path(info["checkpoint"])
    dinfo = dist_utils.setup(device)
    dev = dinfo.device
    report = ScoringReport(round_)
    if dinfo.is_main:
        _fold_shards(ws, round_)  # results a killed multi-process pass left behind
    dist_utils.barrier()
    if set(names) <= MODEL_FREE and not region_names:
        # nothing to run the model for (random): score every unlabeled image directly
        t0 = time.time()
        if dinfo.is_main:
            recs = ws.images("pool", state="unlabeled")
            ws.write_scores(round_, [(r.id, n, SCORES[n](ScoreInput(None, None, cfg, None, None, None, r.id,
                                                                     round_)).value) for r in recs for n in names])
            report.scored = len(recs)
        report.seconds = time.time() - t0
        return report
    to_score, to_embed, report.skipped = _pending(ws, round_, names, region_names)
    dist_utils.barrier()  # every rank shards the same list: nobody writes before all have read it
    if not to_score and not to_embed:
        return report
    model, disc = load_model(model_path, cfg, dev)
    needs_disc = "region_relevance" in names or "region_relevance" in region_names
    if needs_disc and disc is None:
        print("note: this model has no region-relevance judge (its round trained none: region.enabled was false, "
              "or the strategy then read no region relevance); region_relevance is NaN for every image and the "
              "dssn strategies rank by class-aware confidence alone; the next round trains a judge")
    pixels = ws.class_pixels("pool").astype(np.float64)
    shares = pixels / pixels.sum() if pixels.sum() > 0 else np.zeros_like(pixels)
    weights = torch.tensor(class_weights(shares, cfg.acquire.class_weight), dtype=torch.float32, device=dev)
    shares_t = torch.tensor(shares, dtype=torch.float32, device=dev)

    records = to_score + to_embed
    n_score = len(to_score)
    plan = threads.configure(cfg.acquire.num_workers if num_workers is None else num_workers, dev.type)
    # fewer threads while the cores are shared
    governor = threads.ThreadGovernor(plan, dev.type, adaptive=cfg.train.adaptive_threads)
    # images the round's training decoded in this process come from the cache
    loader = image_loader(records, cfg.train.image_scale, batch_size or cfg.acquire.batch_size, rank=dinfo.rank,
                          world=dinfo.world_size, num_workers=plan.loader_workers, pin_memory=dev.type == "cuda",
                          cache=shared_cache(cfg.train.decode_cache_mb))
    shard_file = ws.round_dir(round_) / f"scores-rank{dinfo.rank}.jsonl"
    shard = None
    if not dinfo.is_main:
        shard_file.parent.mkdir(parents=True, exist_ok=True)
        shard = open(shard_file, "a")
    t0 = time.time()
    nan: dict[str, list[str]] = defaultdict(list)
    if progress and dinfo.is_main:
        print(scoring_line(cfg, dev, round_, len(records), names))
    bar = progress_bar(total=len(loader), desc=f"scoring round {round_}", unit="batch",
                       disable=not (progress and dinfo.is_main))
    for nb, (index, images) in enumerate(loader):
        if limit_batches is not None and nb >= limit_batches:
            break  # stop early, as a killed process would (for tests of resuming)
        images = images.to(dev, non_blocking=True)
        with torch.inference_mode(), precision.autocast(cfg, dev):
            logits, emb = model.predict(images)
            probs = logits.float().softmax(dim=1)
            rel = disc.reliability(probs, images)[:, 0] if (needs_disc and disc is not None) else None
        rows, maps, embs, region_rows, segs = [], [], [], [], []
        for j, k in enumerate(index.tolist()):
            rec = records[k]
            embs.append((rec.id, emb[j].float().cpu().numpy()))
            if k >= n_score:
                report.embedded += 1
                continue
            x = ScoreInput(probs[j], images[j], cfg, weights, shares_t,
                           rel[j].float() if rel is not None else None, rec.id, round_)
            for name in names:
                with torch.inference_mode():
                    res = SCORES[name](x)
                rows.append((rec.id, name, res.value))
                if not np.isfinite(res.value):
                    nan[name].append(rec.name)
                if res.region_map is not None:
                    maps.append((rec.id, name, res.region_map))
            if region_names:
                if dinfo.is_main:
                    seg = stored_superpixels(ws, rec.id, images[j], cfg)
                else:  # only rank 0 writes the pool: the regions travel in the shard
                    seg = ws.superpixels(rec.id)
                    if seg is None or seg.shape != tuple(images[j].shape[-2:]):
                        from .regions import compute_superpixels
                        seg = compute_superpixels(images[j], cfg)
                        segs.append((rec.id, seg))
                with torch.inference_mode():
                    region_rows += [(rec.id, n, REGION_SCORES[n](x, seg)) for n in region_names]
            report.scored += 1
        if dinfo.is_main:
            if region_rows:
                ws.write_region_scores(round_, region_rows)  # before the image scores: those mark it done
            ws.write_scores(round_, rows, maps, embs)
        else:
            shard.write(json.dumps({"rows": rows, "maps": [(i, n, _encode(m)) for i, n, m in maps],
                                    "embs": [(i, _encode(e)) for i, e in embs],
                                    "regions": [(i, n, _encode32(v)) for i, n, v in region_rows],
                                    "segs": [(i, _encode_seg(g)) for i, g in segs]}) + "\n")
            shard.flush()
        bar.update(1)
        governor.tick()
        faults.point("score.batch")
    bar.close()
    if shard:
        shard.close()
    dist_utils.barrier()
    if dinfo.is_main and dinfo.world_size > 1:
        _fold_shards(ws, round_)
    report.seconds = time.time() - t0
    report.nan = dict(nan)
    return report


def _fold_shards(ws: Workspace, round_: int) -> None:
    """Rank 0 writes the other ranks' results into the pool, then deletes their shard files."""
    for f in sorted(ws.round_dir(round_).glob("scores-rank*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed process: those images are rescored next time
            for i, seg in d.get("segs", []):
                ws.set_superpixels(i, _decode_seg(seg))
            ws.write_region_scores(round_, [(i, n, _decode32(v)) for i, n, v in d.get("regions", [])])
            ws.write_scores(round_, [tuple(r) for r in d["rows"]],
                            [(i, n, _decode(m)) for i, n, m in d["maps"]],
                            [(i, _decode(e)) for i, e in d["embs"]])
        os.unlink(f)
