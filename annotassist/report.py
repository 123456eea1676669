"""Readable tables of a workspace's pool: states, rounds, class pixels."""
from __future__ import annotations

from .workspace import STATES, Workspace


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain-text table; `align` has one 'l' or 'r' per column (default: text left, numbers right)."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if align is None:
        align = "".join("r" if rows and isinstance(rows[0][i], (int, float)) else "l" for i in range(len(headers)))
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def pct(fraction: float | None) -> str | None:
    """A fraction shown as a percentage with one decimal (mIoU, IoU, shares): what a person reads."""
    return None if fraction is None else f"{fraction * 100:.1f}"


def status_text(ws: Workspace) -> str:
    cfg = ws.config
    out = [f"workspace {ws.root}  ({cfg.dataset.name}, {cfg.num_classes} classes, data {ws.data_root})", ""]
    pool = ws.images("pool")
    counts = {s: 0 for s in STATES}
    for r in pool:
        counts[r.state] += 1
    missing = len(ws.images("pool", include_missing=True)) - len(pool)
    rows = [[s, counts[s], pct(counts[s] / max(1, len(pool)))] for s in STATES]
    rows.append(["total", len(pool), pct(1.0)])
    out.append("pool")
    out.append(table(["state", "images", "share %"], rows, align="lrr"))
    reviewed, total_px = ws.reviewed_pixels("pool")
    partial = ws.partial_samples()
    if partial or cfg.acquire.unit == "region":
        out.append(f"\nregion mode: {len(partial)} images hold reviewed regions; {pct(reviewed / max(1, total_px))}% "
                   f"of the pool's pixels are labeled or reviewed ({reviewed} of {total_px})")
    val = ws.images("val")
    out.append(f"\nevaluation set: {len(val)} images" + (f"; {missing} pool images missing from the source"
                                                            if missing else ""))
    rounds = ws.rounds()
    if rounds:
        out.append("\nrounds")
        rr = []
        for r in rounds:
            m = r["metrics"] or {}
            rr.append([r["round"], r["status"], r["method"] or "-", r["labeled_count"],
                       pct(m.get("mIoU")), len(ws.selections(r["round"]))])
        out.append(table(["round", "status", "method", "labeled", "mIoU %", "selected"], rr, align="rllrrr"))
    pixels = ws.class_pixels("pool")
    total = max(1, int(pixels.sum()))
    out.append("\nlabeled pixels per class (pool)")
    out.append(table(["class", "pixels", "share %"],
                     [[c, int(p), pct(p / total)] for c, p in zip(cfg.dataset.classes, pixels)], align="lrr"))
    absent = [c for c, p in zip(cfg.dataset.classes, pixels) if p == 0]
    if absent and counts["labeled"]:
        out.append(f"\nno labeled pixels yet for: {', '.join(absent)}")
    out += lost_masks_text(ws)
    return "\n".join(out)


def lost_masks_text(ws: Workspace) -> list[str]:
    """A warning for mask files gone from the workspace (training and export stop on a lost label)."""
    lost = ws.lost_masks()
    if not lost:
        return []
    labels = [m for m in lost if m.is_label]
    truth = [m for m in lost if m.mask.kind == "ground_truth"]
    names = ", ".join(f"{m.image_name} ({m.mask.path.relative_to(ws.root)})" for m in (labels or lost)[:5])
    out = [f"\nwarning: {len(lost)} mask file(s) are missing from {ws.root / 'masks'}, {len(labels)} of them "
           f"current labels (training and export stop on those): {names}{' ...' if len(lost) > 5 else ''}",
           f"  fix: restore {ws.root / 'masks'} from a backup"]
    if truth:
        out[-1] += (f"; the {len(truth)} ground-truth one(s) are rewritten from the dataset by 'annotassist init "
                    f"--config {ws.root / 'config.yaml'} --data {ws.data_root} --workspace {ws.root}'")
    return out


def round_rows(ws: Workspace) -> list[dict]:
    """Per round: the labels it trained on, its evaluation, and the effort spent on the images it selected
    (pixels a person changed in their pre-annotations, the regions those form, and what drawing the same
    labels from scratch would have cost: every labeled pixel). `selected` is None before its selection;
    `human` holds the round's corrected mask versions themselves, for readers that measure them further."""
    classes = ws.config.dataset.classes
    out = []
    for r in ws.rounds():
        m = r["metrics"] or {}
        picked = [i for i, *_ in ws.selections(r["round"])]
        selected = len(picked) if picked or ws.step_status(r["round"], "select") == "done" else None
        human, mix, regions = [], [0] * len(classes), 0
        for i in picked:
            versions = ws.masks(i)
            for k, h in enumerate(versions):
                if h.round != r["round"] or h.kind not in ("human", "partial"):
                    continue
                human.append(h)
                new = h.class_pixels
                if h.kind == "partial":  # a partial version holds every region reviewed so far: count this query's
                    before = [v for v in versions[:k] if v.kind == "partial"]
                    new = [a - b for a, b in zip(h.class_pixels, before[-1].class_pixels)] if before else new
                    regions += len(ws.region_query(r["round"], i) or [])
                mix = [a + b for a, b in zip(mix, new)]
        out.append({"round": r["round"], "status": r["status"], "labeled": r["labeled_count"],
                    "mIoU": m.get("mIoU"), "per_class_iou": m.get("per_class_iou") or {},
                    "selected": selected, "corrected": len(human) if selected is not None else None,
                    "pixels_changed": sum(h.changed_pixels or 0 for h in human),
                    "regions_changed": sum(h.changed_regions or 0 for h in human),
                    "scratch_pixels": sum(mix),
                    "reviewed_pixels": sum(h.reviewed_pixels or 0 for h in human if h.kind == "partial"),
                    "regions_reviewed": regions,
                    "selected_class_pixels": dict(zip(classes, mix)), "human": human})
    return out


def rounds_table(ws: Workspace, per_class: bool = False) -> str:
    """The rounds as a person reads them: mIoU and IoU in %, effort in pixels next to the from-scratch cost."""
    rows = round_rows(ws)
    classes = ws.config.dataset.classes if per_class else []
    region = any(r["regions_reviewed"] for r in rows)  # region mode: what was asked and looked at, too
    headers = ["round", "labeled", "mIoU %", "selected", "corrected"] + \
        (["regions asked", "pixels reviewed"] if region else []) + \
        ["pixels changed", "regions", "from scratch", "saved %"] + [f"{c} %" for c in classes]
    body = []
    for r in rows:
        done = bool(r["corrected"])
        saved = pct(1 - r["pixels_changed"] / r["scratch_pixels"]) if done and r["scratch_pixels"] else None
        body.append([r["round"], r["labeled"], pct(r["mIoU"]), r["selected"], r["corrected"]]
                    + ([r["regions_reviewed"] if done else None, r["reviewed_pixels"] if done else None]
                       if region else [])
                    + [r["pixels_changed"] if done else None, r["regions_changed"] if done else None,
                       r["scratch_pixels"] if done else None, saved]
                    + [pct(r["per_class_iou"].get(c)) for c in classes])
    return table(headers, body, align="r" * len(headers))
