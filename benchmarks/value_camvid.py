"""What the assistant is worth: mIoU on CamVid against the effort a person spends, for each way of working.

The protocol (issue 17): pool = CamVid train (367), evaluation = CamVid val (101), 16 random images to start,
+16 per round, 4 rounds, 3 seeds; the simulated annotator returns the dataset's masks and counts what a person
changes. Arms (the default: scratch, random, dssn_cost):
    scratch    no assistant: random images, a supervised model, every label drawn from scratch
    random     random images, the profile's method, pre-annotations corrected
    dssn_cost  the cost-aware dssn selection (the CamVid profiles' strategy), pre-annotations corrected
    entropy, dssn   the other selections; any NAME=STRATEGY[:METHOD[:scratch|region]] (`random=random:dssn`:
               DSSN training) works too
    full       every pool label, supervised, 12x a round's steps (2400 on a CPU): the ceiling
Headline: the effort each arm needs to reach 90% of the ceiling's mIoU, and the area under mIoU against effort.

On a CPU it runs the camvid config's `value` profile (small images, short warm-started rounds, supervised training:
on 2 cores it buys more than DSSN in the minutes a round has), the whole protocol in one call (about 52 minutes on 2
AMD EPYC cores); on a GPU the config as written (published size, DSSN).

    python benchmarks/value_camvid.py                    # the protocol; JSON + plot in benchmarks/results/
    python benchmarks/value_camvid.py --seeds 1 --rounds 2 --arms scratch,dssn_cost --no-full  # a quicker look
    python benchmarks/value_camvid.py --merge A.json B.json --name value_camvid_cpu   # arms run apart, one table

Writes benchmarks/results/value_camvid_<cpu|gpu>.json, .png and .md (the run's own folder is kept under
--work, default /tmp/value_camvid).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotassist.config import load_config  # noqa: E402
from annotassist.simulate import SimulationPlan, parse_arm, plot, simulate, summarize, summary_markdown  # noqa: E402

ARMS = {"scratch": "scratch=random:supervised:scratch", "random": "random=random", "entropy": "entropy=entropy",
        "dssn": "dssn=dssn", "dssn_cost": "dssn_cost=dssn_cost"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--config", default=str(ROOT / "configs" / "camvid.yaml"))
    ap.add_argument("--profile", default=None, help="default: value on CPU, none on GPU")
    ap.add_argument("--arms", default="scratch,random,dssn_cost",
                    help=f"of {', '.join(ARMS)}, or NAME=STRATEGY[:METHOD[:scratch|region]]")
    ap.add_argument("--init", type=int, default=16)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--region-budget", type=int, help="regions per round in region arms (NAME=STRATEGY:region; "
                    "default acquire.region_budget)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-full", action="store_true", help="skip the fully labeled reference")
    ap.add_argument("--full-steps", type=float, default=None, help="the reference trains this many times longer "
                    "than a round (default: 12 with the value profile, i.e. 2400 steps; else 3)")
    ap.add_argument("--set", action="append", default=[], help="more config overrides")
    ap.add_argument("--work", default="/tmp/value_camvid")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default=None, help="results file stem (default: value_camvid_<cpu|gpu>)")
    ap.add_argument("--merge", nargs="+", help="instead of running: merge the rows of result files of the same "
                    "protocol (arms run in separate calls) into one summary, plot and table")
    args = ap.parse_args(argv)
    if args.merge:
        return merge([Path(p) for p in args.merge], Path(args.out), args.name or "value_camvid_merged")
    gpu = torch.cuda.is_available()
    profile = args.profile if args.profile is not None else (None if gpu else "value")
    cfg = load_config(args.config, profile=profile or None, overrides=args.set)
    arms = [parse_arm(ARMS.get(a, a)) for a in args.arms.split(",")]
    steps = cfg.train.max_iters
    full_steps = args.full_steps if args.full_steps is not None else (12.0 if profile == "value" else 3.0)
    full_overrides = [f"train.max_iters={int(steps * full_steps)}"] if steps else []
    plan = SimulationPlan(init=args.init, budget=args.budget, rounds=args.rounds, seeds=args.seeds,
                          full=not args.no_full, full_overrides=full_overrides, warm_start=cfg.loop.warm_start,
                          profile=profile or "", arms=arms, region_budget=args.region_budget)
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    result = simulate(cfg, plan, work, Path(args.data))
    stem = args.name or f"value_camvid_{'gpu' if gpu else 'cpu'}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    shutil.copy(work / "learning_curve.png", out / f"{stem}.png")
    shutil.copy(work / "summary.md", out / f"{stem}.md")
    print(f"\nwrote {out / stem}.json, .png, .md ({result['seconds'] / 60:.1f} min)")
    return result


def merge(paths: list[Path], out: Path, stem: str) -> dict:
    """One summary over arms measured in separate calls. They must share the protocol (dataset, profile, init,
    budget, rounds, seeds); the fully supervised reference is taken from the LAST file that has one, so a
    longer reference run on its own (`--seeds 0 --full-steps N`: no arms, only the model sizes must match) can
    replace an earlier one."""
    parts = [json.loads(p.read_text()) for p in paths]
    keys = ("dataset", "pool_size", "backbone", "decoder", "max_iters", "image_scale")
    first = next((r for r in parts if r["rows"]), parts[0])
    for p, r in zip(paths, parts):
        # a reference-only file has no rounds: its pool and its rounds' length (max_iters; it trained
        # full_overrides' steps) need not match the arms'
        differ = [k for k in keys if r.get(k) != first.get(k) and not (k in ("pool_size", "max_iters") and not r["rows"])]
        if r["rows"]:
            differ += [k for k in ("init", "budget", "rounds", "seeds", "profile") if r["plan"][k] != first["plan"][k]]
        if differ:
            sys.exit(f"{p}: another protocol than {paths[0]} ({', '.join(differ)}); only runs of one protocol merge")
    rows = [row for r in parts for row in r["rows"]]
    with_full = [r for r in parts if r.get("full_mIoU")]
    full = with_full[-1]["full_mIoU"] if with_full else None
    summary = summarize(rows, full, first["pool_size"])
    plan = first["plan"]
    title = (f"{first['dataset']}: init {plan['init']}, +{plan['budget']}/round, {plan['rounds']} rounds, "
             f"{plan['seeds']} seed(s), profile {plan['profile']} - {first['machine']}")
    seconds = sum(r["seconds"] for r in parts)
    result = {**first, "summary": summary, "rows": rows, "seconds": seconds, "full_mIoU": full,
              "full_steps": with_full[-1]["plan"].get("full_overrides") if with_full else None,
              "merged_from": [str(p) for p in paths],
              "arms": [a for r in parts for a in r["plan"]["arms"]]}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    plot(rows, full, out / f"{stem}.png", title)
    text = summary_markdown(summary, full, title, seconds)
    (out / f"{stem}.md").write_text(text)
    print(text + f"\nwrote {out / stem}.json, .png, .md")
    return result


if __name__ == "__main__":
    main()
