"""`annotassist demo`: the whole loop on the embedded synthetic set, with a simulated annotator.

Generates the demo set, starts a workspace with 16 labeled images and runs `loop` for 3 rounds of train (DSSN,
warm-started) -> score -> select -> pre-annotate -> correct (the simulated annotator), then writes the report
plots and exports the labels. `--compare` runs the `simulate` benchmark instead: `dssn` against `random`
selection plus a fully labeled reference (several times longer).
"""
from __future__ import annotations

import time
from pathlib import Path

from .config import load_config
from .errors import AnnotassistError
from .export import export
from .hints import command
from .importer import create_workspace
from .workspace import Workspace

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def find_config(name: str) -> Path:
    """A config by name (`demo`, `camvid`, ...): ./configs/NAME.yaml, else the one shipped with annotassist."""
    candidates = [Path("configs") / f"{name}.yaml", CONFIGS / f"{name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted({p.stem for d in (Path("configs"), CONFIGS) if d.is_dir() for p in d.glob("*.yaml")})
    raise AnnotassistError(f"no config named {name!r} (looked for {', '.join(map(str, candidates))}); known: "
                           f"{', '.join(known) or 'none'}; or pass a config file or a workspace path")


def run_demo(out: str | Path = "runs/demo", rounds: int = 3, config: str | None = None,
             overrides: list[str] | None = None, device: str | None = None, compare: bool = False) -> dict:
    out = Path(out)
    cfg = load_config(Path(config) if config else find_config("demo"),
                      overrides=list(overrides or []) + [f"loop.rounds={rounds}", "loop.annotator=simulated"])
    if compare:
        return _compare(cfg, out, rounds, device)
    from .loop import RunOptions, run_loop
    from .plots import round_plots
    from .report import round_rows

    from .runtime.threads import current_plan

    t0 = time.time()
    s = cfg.synthetic
    print(f"annotassist demo: {s.num_pool} pool + {s.num_val} evaluation images ({s.size}px, {cfg.num_classes} "
          f"classes), {cfg.pool.initial_labeled} labeled to start, +{cfg.acquire.budget} per round, {rounds} "
          f"rounds of DSSN ({cfg.train.max_iters} steps a round, warm-started); writing to {out}\n"
          f"{current_plan(cfg.train.num_workers).describe()}")
    ws_path = out / "workspace"
    if not (ws_path / "pool.sqlite").is_file():
        ws, _ = create_workspace(ws_path, cfg, out / "data", progress=False)  # generates the set into out/data
        ws.close()
    else:
        with Workspace(ws_path) as ws:  # a demo run again: this run's settings are the workspace's
            ws.apply_config(replace=cfg, why="demo")
    result = run_loop(ws_path, RunOptions(device=device))
    with Workspace(ws_path) as ws:
        rows = round_rows(ws)
        plots = round_plots(rows, cfg.dataset.classes, out, cfg.palette(), ws.class_pixels("pool"))
        summary = export(ws, out / "export", progress=False)
    minutes = (time.time() - t0) / 60
    me = command()
    print(f"\n{result.stopped_because} in {minutes:.1f} min.\n"
          f"plots: {', '.join(str(p) for p in plots)}\n"
          f"labels exported for any trainer: {out / 'export'} ({summary['labeled_count']} labeled, "
          f"{summary['unlabeled_count']} unlabeled, {summary['val_count']} val)\n"
          f"correct the queued images yourself in the browser:  {me} ui --workspace {ws_path}\n"
          f"then train on your corrections and go on:           {me} loop --project {ws_path} "
          f"--rounds {rounds + 2}")
    return {"rows": rows, "minutes": minutes}


def _compare(cfg, out: Path, rounds: int, device: str | None) -> dict:
    from .simulate import SimulationPlan, simulate

    plan = SimulationPlan(strategies=["random", "dssn"], init=cfg.pool.initial_labeled, budget=cfg.acquire.budget,
                          rounds=rounds, seeds=1, full=True, warm_start=True, profile="demo", device=device,
                          progress=True)
    result = simulate(cfg, plan, out, out / "data")
    print(f"\nlearning curve: {out / 'learning_curve.png'}\nresults: {out / 'results.csv'}")
    return result
