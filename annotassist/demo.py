"""`annotassist demo`: the whole loop on the embedded synthetic set, with a simulated annotator.

Generates the demo set, starts a workspace with 16 labeled images, and runs rounds of
train (DSSN) -> score -> select -> pre-annotate -> correct (the simulated annotator) for the `dssn` strategy and
for `random` side by side, plus a fully supervised reference; then exports the labeled pool. It prints the
learning-curve table and where the plot, the workspaces and the export are.
"""
from __future__ import annotations

from pathlib import Path

from .config import load_config
from .errors import AnnotassistError
from .export import export
from .simulate import SimulationPlan, simulate
from .workspace import Workspace


def find_demo_config(path: str | None) -> Path:
    candidates = [Path(path)] if path else [Path("configs/demo.yaml"),
                                           Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise AnnotassistError(f"demo config not found (looked for {', '.join(map(str, candidates))}); run from "
                           "the repository root or pass --config")


def run_demo(out: str | Path = "runs/demo", rounds: int = 2, config: str | None = None,
             overrides: list[str] | None = None, device: str | None = None) -> dict:
    out = Path(out)
    cfg = load_config(find_demo_config(config), overrides=overrides)
    plan = SimulationPlan(strategies=["random", "dssn"], init=cfg.pool.initial_labeled, budget=cfg.acquire.budget,
                          rounds=rounds, seeds=1, full=True, warm_start=True, profile="demo", device=device,
                          progress=True)
    print(f"annotassist demo: {cfg.synthetic.num_pool} pool + {cfg.synthetic.num_val} evaluation images "
          f"({cfg.synthetic.size}px, {cfg.num_classes} classes), {plan.init} labeled to start, "
          f"+{plan.budget} per round, {rounds} rounds; writing to {out}")
    result = simulate(cfg, plan, out, out / "data")
    ws_path = out / "seed0" / "dssn"
    with Workspace(ws_path) as ws:
        summary = export(ws, out / "export", progress=False)
    print(f"\nlearning curve: {out / 'learning_curve.png'}\nresults: {out / 'results.csv'}\n"
          f"the dssn workspace: {ws_path} (annotassist status --workspace {ws_path})\n"
          f"its labels, exported for any trainer: {out / 'export'} ({summary['labeled_count']} labeled, "
          f"{summary['unlabeled_count']} unlabeled, {summary['val_count']} val)")
    return result
