"""The `annotassist` command. Thin: each verb parses its arguments and calls one function."""
from __future__ import annotations

import argparse
import errno
import functools
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AnnotassistError

if TYPE_CHECKING:
    from .workspace import Workspace


def _config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="YAML config (see configs/)")
    p.add_argument("--profile", help="apply a named profile of the config, e.g. cpu (default: cpu when there is "
                                      "no GPU and the config has one; 'none' for the config as written)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=3 (repeatable)")


def _load(args, extra: list[str] | None = None):
    """The config file with this machine's profile (the `cpu` one when there is no GPU), --set and `extra`."""
    from .config import load_config, machine_profile

    profile, note = machine_profile(args.config, args.profile)
    if note:
        print(note)
    args.profile = profile
    return load_config(args.config, profile=profile, overrides=list(args.set) + (extra or []))


def _apply(ws: Workspace, args, extra: list[str] | None = None, why: str = "") -> None:
    """Apply this command's --profile / --set (and option overrides) to the workspace's stored config, once
    (rank 0 under torchrun; the other ranks read the result) and say what changed."""
    from .runtime import distributed as dist_utils

    overrides = list(getattr(args, "set", None) or []) + (extra or [])
    profile = getattr(args, "profile", None)
    profile = None if profile == "none" else profile
    if not (profile or overrides):
        return
    dist_utils.setup(getattr(args, "device", None))
    if dist_utils.is_main():
        changes = ws.apply_config(profile, overrides, why=why or args.verb)
        if changes:
            print(f"config of {ws.root} updated:\n  " + "\n  ".join(changes))
    dist_utils.barrier()
    if not dist_utils.is_main():
        ws.reload_config()


def _data_root(args, cfg, ws_path: Path) -> Path:
    """--data, else dataset.root, else <workspace>/data (where a synthetic set is generated)."""
    data = Path(args.data or cfg.dataset.root or (ws_path / "data"))
    if cfg.dataset.layout != "synthetic" and not data.is_dir():
        raise AnnotassistError(f"data root {data} not found; pass --data DIR or set dataset.root in {cfg.source}")
    return data


def _writes(func=None, *, create: bool = False):
    """The verb changes the pool: it holds the workspace lock while it runs (lock.py), so a second writer is
    refused with the holder's pid. `create`: the folder may not exist yet (init makes it; if init then fails
    before writing anything, the folder is removed again)."""
    if func is None:
        return functools.partial(_writes, create=create)

    @functools.wraps(func)
    def run(args, *rest) -> int:
        from .lock import LOCK_FILE, WorkspaceLock

        ws = Path(args.workspace) if getattr(args, "workspace", None) else None
        # split-file training has no workspace; under torchrun only rank 0 writes to the pool
        if ws is None or os.environ.get("RANK", "0") != "0" or not (ws.exists() or create):
            return func(args, *rest)
        made = not ws.exists()
        if made:
            try:
                ws.mkdir(parents=True)
            except OSError as e:
                raise AnnotassistError(f"cannot create the workspace folder {ws} ({e.strerror}); choose a "
                                       "folder you can write to") from None
        try:
            with WorkspaceLock(ws, args.verb):
                return func(args, *rest)
        finally:
            if made and [p.name for p in ws.iterdir()] in ([LOCK_FILE], []):
                (ws / LOCK_FILE).unlink(missing_ok=True)
                ws.rmdir()
    return run


def _say_who_writes(ws_path) -> None:
    """A read beside a running writer: say who it is (the numbers may move while it runs)."""
    from .lock import describe, holder

    info = holder(ws_path)
    if info:
        print(f"note: {describe(info)} is changing {ws_path} now; what follows may change while it runs")


@_writes(create=True)
def cmd_init(args) -> int:
    from .importer import create_workspace, import_dataset, label_from_list
    from .workspace import Workspace

    extra = [f"pool.initial_labeled={args.labeled}"] if args.labeled is not None else []
    extra += [f"pool.seed={args.seed}"] if args.seed is not None else []
    ws_path = Path(args.workspace)
    cfg = _load(args, extra) if args.config else _starter(args, extra, ws_path)
    data = _data_root(args, cfg, ws_path)
    if args.val_share is not None and not (ws_path / "pool.sqlite").exists():
        from .starter import hold_out
        cfg = hold_out(cfg, data, args.val_share, ws_path / "lists")
        print(f"held out {args.val_share:.0%} of the masked images for evaluation: {ws_path / 'lists' / 'val.txt'}")
    if (ws_path / "pool.sqlite").exists():
        ws = Workspace(ws_path)
        if ws.count(split=None) == 0:
            # its first init stopped before any image came in: this init's config and data take its place
            ws.apply_config(replace=cfg, why="init on a workspace that holds no images yet")
            ws.set_data_root(data)
            print(f"workspace {ws_path} held no images yet: using {cfg.source} and {data}")
        else:
            print(f"updating existing workspace {ws_path} (masks already in it are kept)")
            _say_what_init_keeps(ws, cfg, data, args)
        report = import_dataset(ws)
    else:
        ws, report = create_workspace(ws_path, cfg, data)
    with ws:
        if args.labeled_list:
            label_from_list(ws, Path(args.labeled_list))
        print(f"added {report.added} images ({report.labeled} labeled), {report.unchanged} unchanged")
        for name in report.changed:
            print(f"  changed since last init: {name}")
        if report.disappeared:
            print(f"{len(report.disappeared)} images are no longer in the source (kept, marked missing):")
            for name in report.disappeared[:20]:
                print(f"  {name}")
        if report.problems:
            print(f"\n{len(report.problems)} problem(s); these images were skipped, the rest was added:")
            for p in report.problems:
                print(f"  - {p}")
        if report.restored:
            print(f"\nrewrote {len(report.restored)} ground-truth mask file(s) lost from {ws_path / 'masks'} from "
                  "the dataset's masks")
        if report.lost:
            print(f"\n{len(report.lost)} mask file(s) are lost from the workspace; only a backup brings them back:")
            for p in report.lost:
                print(f"  - {p}")
        print()
        from .report import status_text
        print(status_text(ws))
    return 1 if (report.problems and args.strict) else 0


def _starter(args, extra: list[str], ws_path: Path):
    """init without --config: a config written for the folder and this machine (annotassist/starter.py)."""
    from .config import from_dict
    from .starter import starter_config

    if not (args.data and args.classes):
        raise AnnotassistError("init needs --config CONFIG, or --data DIR --classes NAME,NAME,... (a config is then "
                               "written for the folder and this machine)")
    import torch

    data = Path(args.data)
    if not data.is_dir():
        raise AnnotassistError(f"--data {data}: not a folder")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    gpu = torch.cuda.is_available()
    cfg = starter_config(data, classes, ws_path.name or "dataset", gpu)
    if not gpu:
        print("no CUDA device here: the config is sized for this CPU (a round of minutes, not hours); on a GPU "
              "machine the same command writes the published recipe")
    if args.set or extra:
        cfg = from_dict(cfg.to_dict(), source=cfg.source, overrides=list(args.set) + extra)
    d, t = cfg.dataset, cfg.train
    how = f"values {d.mask_values} in the mask files" if d.mask_values else "class ids in the mask files"
    print(f"config for {data}: layout {d.layout}, classes {', '.join(d.classes)} ({how}); "
          f"{cfg.model.backbone}, images at {t.image_scale:g}x, crop {t.crop_size}, "
          f"{t.max_iters or t.epochs} {'steps' if t.max_iters else 'epochs'} a round; stored as "
          f"{ws_path / 'config.yaml'} (change any setting with --set KEY=VALUE)")
    return cfg


def _say_what_init_keeps(ws: Workspace, cfg, data: Path, args) -> None:
    """A workspace keeps the config it was made with; say which of this init's settings differ (a --set on a
    later command changes it explicitly). Another --data is refused: the pool's images live there."""
    from .config import config_diff

    if data.resolve() != ws.data_root.resolve():
        raise AnnotassistError(f"{ws.root} reads its images from {ws.data_root}, not {data}; to import another "
                               f"dataset start a new workspace (--workspace NEW)")
    stored = ws.config
    if not args.profile and stored.profile and args.config:  # the profile it was made with still applies
        from .config import load_config
        cfg = load_config(args.config, profile=stored.profile, overrides=args.set)
    diff = [d for d in config_diff(stored, cfg) if not d.startswith("pool.")]
    if diff:
        print(f"note: {ws.root} keeps the config it was made with; these settings of {cfg.source} differ and were "
              f"not applied (change one with --set KEY=VALUE on any command):")
        for d in diff[:12]:
            print(f"  {d}")
        if len(diff) > 12:
            print(f"  ... and {len(diff) - 12} more")


def cmd_status(args) -> int:
    from .report import status_text
    from .workspace import Workspace

    with Workspace(args.workspace, write=False) as ws:
        _say_who_writes(ws.root)
        print(status_text(ws))
    return 0


def cmd_export(args) -> int:
    from .export import export
    from .workspace import Workspace

    with Workspace(args.workspace, write=False) as ws:
        _say_who_writes(ws.root)
        summary = export(ws, args.out, link=args.link, force=args.force)
    print(f"exported {summary['labeled_count']} labeled, {summary['unlabeled_count']} unlabeled, "
          f"{summary['val_count']} val images to {args.out}")
    if summary.get("partial_note"):
        print(summary["partial_note"])
    if summary["skipped"]:
        print(f"{len(summary['skipped'])} image(s) not exported:")
        for p in summary["skipped"]:
            print(f"  - {p}")
    return 0


def cmd_synth(args) -> int:
    from .data.synthetic import generate

    out = generate(args.out, args.num_pool, args.num_val, args.size, args.seed)
    print(f"wrote the synthetic set to {out} (train.txt: {args.num_pool}, val.txt: {args.num_val})")
    return 0


def _print_metrics(metrics: dict, classes: list[str]) -> None:
    from .report import table

    print(f"mIoU {metrics.get('mIoU', 0) * 100:.2f}  (pixel accuracy {metrics.get('pixel_acc', 0) * 100:.2f}, "
          f"{metrics.get('steps')} steps, {metrics.get('seconds', 0):.0f} s)")
    per = metrics.get("per_class_iou") or {}
    print(table(["class", "IoU"], [[c, per.get(c)] for c in classes]))


def _teardown_distributed() -> None:
    """End torchrun's process group if this command started one. torch loads only once a command gets past its
    checks (a missing workspace, a damaged pool, a bad --set are refused in a fraction of a second), so the
    module may not be loaded at all."""
    dist_utils = sys.modules.get(f"{__package__}.runtime.distributed")
    if dist_utils is not None:
        dist_utils.teardown()


@_writes
def cmd_train(args) -> int:
    extra = [f"train.epochs={args.epochs}"] if args.epochs is not None else []
    extra += [f"train.max_iters={args.max_iters}"] if args.max_iters is not None else []
    try:
        if args.workspace:
            from .workspace import Workspace

            with Workspace(args.workspace) as ws:
                _apply(ws, args, extra)
                from .rounds import train_round

                cfg = ws.config
                round_, result = train_round(ws, method=args.method, warm_start=args.warm_start,
                                             init_weights=args.init_weights, restart=args.restart_round,
                                             stop_after=args.stop_after, device=args.device)
            where = f"round {round_} of {args.workspace}"
        else:
            missing = [f for f in ("config", "labeled_list", "out") if not getattr(args, f)]
            if missing:
                raise AnnotassistError("train needs --workspace W, or --config C --labeled-list L --out DIR "
                                       f"(missing: {', '.join('--' + m.replace('_', '-') for m in missing)})")
            from .train.run import train_lists

            cfg = _load(args, extra)
            data = Path(args.data or cfg.dataset.root or ".")
            result = train_lists(cfg, Path(args.labeled_list), args.unlabeled_list and Path(args.unlabeled_list),
                                 args.val_list and Path(args.val_list), Path(args.out), data,
                                 method=args.method, resume=args.resume, stop_after=args.stop_after,
                                 device=args.device)
            where = args.out
        from .runtime import distributed as dist_utils

        if dist_utils.is_main():
            if result.interrupted:
                again = "run the same command" if args.workspace else "continue with --resume"
                print(f"stopped at step {result.steps}; checkpoint {result.checkpoint}; {again}")
            else:
                print(f"trained {where}: model {result.model_path}")
                _print_metrics(result.metrics, cfg.dataset.classes)
    finally:
        _teardown_distributed()
    return 0


@_writes
def cmd_score(args) -> int:
    from .workspace import Workspace

    names = args.scores.split(",") if args.scores else None
    try:
        with Workspace(args.workspace) as ws:
            _apply(ws, args, [f"acquire.unit={args.unit}"] if args.unit else [])
            from .acquire.scoring import score_pool
            from .runtime import distributed as dist_utils

            cfg = ws.config
            region_names = []
            if names is None:
                from .acquire.select import score_names
                names, region_names = score_names(cfg, args.strategy)
            report = score_pool(ws, cfg, names, round_=args.round, device=args.device,
                                batch_size=args.batch_size, region_names=region_names)
            if dist_utils.is_main():
                print(f"round {report.round}: scored {report.scored} unlabeled images, embedded "
                      f"{report.embedded} labeled ones, {report.skipped} already done "
                      f"({report.images_per_s:.1f} images/s)")
                for name, images in report.nan.items():
                    print(f"warning: {name} is NaN for {len(images)} image(s), ranked last: "
                          f"{', '.join(images[:5])}{' ...' if len(images) > 5 else ''}")
    finally:
        _teardown_distributed()
    return 0


@_writes
def cmd_select(args) -> int:
    from .report import table
    from .workspace import Workspace

    with Workspace(args.workspace) as ws:
        _apply(ws, args, [f"acquire.unit={args.unit}"] if args.unit else [])
        from .acquire.select import select_for  # torch: after the workspace and the options are known good

        sel = select_for(ws, ws.config, args.strategy, args.budget, args.round)
        if sel.message:
            print(sel.message)
        if sel.picks and ws.config.acquire.unit == "region":
            names = {r.id: r.name for r in ws.images("pool", state="queued")}
            total = sum(r.width * r.height for r in ws.images("pool"))
            print(f"round {sel.round}, strategy {sel.strategy}: queued {sel.regions} regions in {len(sel.picks)} "
                  f"images ({sel.pixels / max(1, total) * 100:.2f}% of the pool's pixels)")
            print(table(["image", "regions"], [[names.get(i, i), len(r)] for i, r in sel.picks.items()]))
        elif sel.picks:
            names = {r.id: r.name for r in ws.images("pool", state="queued")}
            print(f"round {sel.round}, strategy {sel.strategy}: queued {len(sel.picks)} images")
            print(table(["rank", "image", "score"], [[k + 1, names.get(i, i), v] for k, (i, v) in
                                                      enumerate(sel.picks)]))
    return 0


def cmd_simulate(args) -> int:
    from .simulate import SimulationPlan, parse_arm, simulate

    cfg = _load(args)
    data = Path(args.data or cfg.dataset.root or (Path(args.out) / "data"))
    arms = [parse_arm(a) for a in args.arms.split(",")] if args.arms else []
    plan = SimulationPlan(strategies=args.strategies.split(","), init=args.init, budget=args.budget,
                          rounds=args.rounds, seeds=args.seeds, full=args.full, warm_start=args.warm_start,
                          profile=args.profile or "", device=args.device, arms=arms, unit=args.unit,
                          region_budget=args.region_budget)
    simulate(cfg, plan, args.out, data)
    print(f"results in {args.out}: results.csv, results.json, learning_curve.png, summary.md")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, rounds=args.rounds, config=args.config, overrides=args.set, device=args.device,
             compare=args.compare)
    return 0


def _resolve_project(project: str) -> tuple[Path | None, Path | None]:
    """--project NAME|PATH -> (config, existing workspace); NAME is a config in configs/."""
    from .demo import find_config

    p = Path(project)
    if (p / "pool.sqlite").is_file():
        return None, p
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise AnnotassistError(f"config {p} not found")
        return p, None
    return find_config(project), None


def _loop_overrides(args) -> list[str]:
    """The loop's options are config keys: stored with the workspace, so a rerun goes on with the same plan."""
    keys = {"rounds": "loop.rounds", "budget": "acquire.region_budget" if args.unit == "region" else "acquire.budget",
            "annotator": "loop.annotator", "unit": "acquire.unit", "strategy": "acquire.strategy",
            "target_miou": "loop.target_miou", "url": "loop.labelstudio_url"}
    out = [f"{key}={getattr(args, opt)}" for opt, key in keys.items() if getattr(args, opt) is not None]
    return out + (["loop.warm_start=false"] if args.from_scratch else [])


def cmd_loop(args) -> int:
    from .config import load_config, machine_profile

    if args.url:  # checked before it is stored in the workspace's config (never a key in it)
        from .annotate.lsclient import check_url
        args.url = check_url(args.url)
    config, ws_path = _resolve_project(args.project)
    overrides = list(args.set) + _loop_overrides(args)
    cfg, note = None, ""
    if ws_path is None:
        ws_path = Path(args.workspace) if args.workspace else None
        new = ws_path is None or not (ws_path / "pool.sqlite").is_file()
        profile, note = machine_profile(config, args.profile) if new else (args.profile, "")
        cfg = load_config(config, profile=profile, overrides=overrides)
        ws_path = ws_path or Path(f"runs/{cfg.dataset.name}")
        if not new:
            cfg = None  # an existing workspace keeps its own config; --profile/--set are applied to it below
    args.workspace = str(ws_path)
    return _loop_locked(args, cfg, overrides, note)


@_writes(create=True)
def _loop_locked(args, cfg, overrides: list[str], note: str = "") -> int:
    """The loop's part that holds the lock: making the workspace, storing its options, the rounds."""
    from .hints import command
    from .importer import create_workspace
    from .workspace import Workspace

    ws_path = Path(args.workspace)
    if cfg is not None and not (ws_path / "pool.sqlite").is_file():
        if note:
            print(note)
        args.profile = None  # applied at creation
        # a synthetic layout is generated into its root by the import (data.synthetic.ensure_generated)
        ws, report = create_workspace(ws_path, cfg, _data_root(args, cfg, ws_path))
        with ws:
            print(f"workspace {ws_path}: {report.added} images, {report.labeled} labeled to start")
            for p in report.problems:
                print(f"  skipped: {p}")
    with Workspace(ws_path) as ws:
        args.set = overrides
        _apply(ws, args, why="loop")
    # torch and the rounds load only now: a damaged pool or a bad --set is refused in a fraction of a second
    from .loop import RunOptions, run_loop

    options = {"url": args.url, "host": args.host, "port": args.port}
    opts = RunOptions(gpus=args.gpus, device=args.device, restart_round=args.restart_round,
                      annotator_options={k: v for k, v in options.items() if v})
    try:
        result = run_loop(ws_path, opts)
    except KeyboardInterrupt:
        return 130
    me = command()
    print(f"\nloop stopped: {result.stopped_because}. Workspace: {ws_path}\n"
          f"  {me} ui --workspace {ws_path}          correct the queued images in the browser\n"
          f"  {me} report --workspace {ws_path}      tables and plots\n"
          f"  {me} export --workspace {ws_path} --out DIR     the labels for any trainer")
    return 0


def cmd_report(args) -> int:
    from .plots import round_plots
    from .report import round_rows, rounds_table
    from .workspace import Workspace

    with Workspace(args.workspace, write=False) as ws:
        _say_who_writes(ws.root)
        print(rounds_table(ws, per_class=True))
        out = Path(args.out or (ws.root / "report"))
        if ws.readonly and not args.out:
            raise AnnotassistError(f"the workspace {ws.root} is read-only, so the plots cannot go to {out}; "
                                   "pass --out DIR")
        paths = round_plots(round_rows(ws), ws.config.dataset.classes, out, ws.config.palette(),
                            ws.class_pixels("pool"))
    print("\nplots: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_ui(args) -> int:
    from .auth import read_auth
    from .workspace import Workspace

    auth = read_auth(args.auth, args.auth_file)
    with Workspace(args.workspace):  # a bad login or workspace is refused before gradio loads (~1.5 s)
        pass
    from .ui.editor import launch

    print(f"correction editor for {args.workspace} (Ctrl-C to stop)")
    launch(args.workspace, host=args.host, port=args.port, share=args.share, auth=auth)
    return 0


@_writes
def cmd_push(args) -> int:
    from .annotate.labelstudio import LabelStudioSync
    from .workspace import Workspace

    with Workspace(args.workspace) as ws:
        sync = LabelStudioSync(ws, args.url, document_root=args.document_root, title=args.project)
        try:
            r = sync.push(round_=args.round)
        finally:
            sync.close()
    print(f"Label Studio {args.url}, project {r.project_id} '{r.project_title}' (images via {r.images}):")
    print(f"  {len(r.created)} new tasks, {len(r.updated)} given a newer prediction, {len(r.unchanged)} unchanged, "
          f"{len(r.without_prediction)} without a pseudo mask")
    print(f"  label them at {args.url}/projects/{r.project_id}/data, then run "
          f"'annotassist pull --workspace {args.workspace} --url {args.url}'")
    return 0


@_writes
def cmd_pull(args) -> int:
    from .annotate.labelstudio import LabelStudioSync, pending
    from .workspace import Workspace

    with Workspace(args.workspace) as ws:
        unpainted = 255 if args.unpainted == "ignore" else _class_id(ws, args.unpainted)
        sync = LabelStudioSync(ws, args.url, title=args.project, unpainted=unpainted)
        try:
            r = sync.pull()
        finally:
            sync.close()
        waiting = pending(ws)
    print(f"pulled {len(r.pulled)} corrected masks from {args.url}; {waiting} still waiting in Label Studio")
    for c in r.pulled:
        changed = "no pre-annotation" if c.changed_pixels is None else \
            f"{c.changed_pixels} pixels changed in {c.changed_regions} regions"
        if c.regions_reviewed is None:
            print(f"  {c.name}: task {c.task_id}, {changed}, {c.labeled_pixels} labeled pixels")
        else:  # a region task: only the queried regions were stored
            outside = f"; {c.outside_pixels} pixels painted outside them not stored" if c.outside_pixels else ""
            print(f"  {c.name}: task {c.task_id}, {c.regions_reviewed} regions reviewed, {changed} inside them, "
                  f"{c.labeled_pixels} labeled pixels stored{outside}")
    for title, names in (("skipped/cancelled in Label Studio (left in review)", r.skipped),
                         ("tasks deleted in Label Studio (back to unlabeled)", r.deleted),
                         ("bad annotations, skipped", r.problems)):
        if names:
            print(f"{len(names)} {title}:")
            for n in names:
                print(f"  - {n}")
    return 0


@_writes  # predictions, webhooks and rounds write to the pool: one writer, as every other verb
def cmd_serve(args) -> int:
    from .annotate.ml_backend import serve

    serve(args.workspace, host=args.host, port=args.port, url=args.url, device=args.device)
    return 0


def _class_id(ws: Workspace, name: str) -> int:
    classes = ws.config.dataset.classes
    if name in classes:
        return classes.index(name)
    raise AnnotassistError(f"--unpainted {name}: not a class of {ws.root} ({', '.join(classes)}); or 'ignore'")


def _known(what: str, full: bool) -> str:
    """The registered strategies or scores, listed in --help (the registry imports torch, which a plain
    `status` should not wait for, so it is read only when help is asked for)."""
    if not full:
        return "see --help"
    from .acquire.scores import SCORES
    from .acquire.strategies import STRATEGIES

    names = sorted(STRATEGIES) + sorted(set(SCORES) - set(STRATEGIES)) if what == "strategies" else sorted(SCORES)
    return "one of: " + ", ".join(names)


def build_parser(full_help: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="annotassist",
        description="Active labeling for semantic segmentation: train DSSN on labeled + unlabeled images, "
                    "pick what to label next, hand pseudo-masks to a person for correction.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("demo", help="the whole loop on the embedded synthetic set (simulated annotator)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare", action="store_true",
                   help="also run random selection and a fully labeled reference (several times longer)")
    p.add_argument("--config", help="default: configs/demo.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("loop", help="rounds of train, score, select, pre-annotate, correct; resumable",
                       description="Runs rounds until --rounds, the pool or --target-miou runs out. Killed at any "
                                   "point, the same command continues where it stopped.")
    p.add_argument("--project", required=True,
                   help="a config name in configs/ (demo, camvid, voc, cityscapes), a config file or a workspace")
    p.add_argument("--profile", help="apply a named profile of the config, e.g. cpu (default: cpu when there is "
                                      "no GPU and the config has one; 'none' for the config as written)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", help="dataset root (default: dataset.root of the config)")
    p.add_argument("--workspace", help="default: runs/<dataset name>")
    p.add_argument("--annotator", choices=["simulated", "labelstudio", "gradio"])
    p.add_argument("--url", help="Label Studio URL (key from LABEL_STUDIO_API_KEY)")
    p.add_argument("--host", help="editor host (gradio annotator; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="editor port (gradio annotator)")
    p.add_argument("--rounds", type=int, help="acquisition rounds in all (default: loop.rounds)")
    p.add_argument("--unit", choices=["image", "region"],
                   help="what a person labels: whole images, or the superpixel regions the model most likely got "
                        "wrong (default: acquire.unit)")
    p.add_argument("--budget", type=int, help="images per round (default: acquire.budget); with --unit region, "
                                              "regions per round (acquire.region_budget)")
    p.add_argument("--strategy", help=f"selection strategy (default: acquire.strategy); "
                                       f"{_known('strategies', full_help)}")
    p.add_argument("--target-miou", type=float, help="stop once the evaluation mIoU reaches this (0..1)")
    p.add_argument("--from-scratch", action="store_true", help="train each round from ImageNet weights")
    p.add_argument("--restart-round", action="store_true",
                   help="train an unfinished round again from its start with the current settings")
    p.add_argument("--gpus", type=int, default=0, help="train and score under torchrun with N processes")
    p.add_argument("--device")
    p.set_defaults(func=cmd_loop)

    p = sub.add_parser("report", help="the rounds table with per-class IoU and effort, and PNG plots")
    p.add_argument("--workspace", required=True)
    p.add_argument("--out", help="folder for the plots (default: <workspace>/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("init", help="create or update a workspace from a dataset",
                       description="With --config: the dataset that config describes. Without: --data DIR --classes "
                                   "a,b,... writes a config for the folder (DIR/images + DIR/masks, a list file "
                                   "DIR/train.txt, VOC or Cityscapes) sized for this machine.")
    _config_args(p, required=False)
    p.add_argument("--data", help="dataset root (default: dataset.root of the config)")
    p.add_argument("--classes", help="without --config: class names in the order of the mask values, e.g. "
                                     "background,vessel")
    p.add_argument("--val-share", type=float, help="hold out this share of the masked images as the evaluation "
                                                   "set (when the dataset names none), e.g. 0.2")
    p.add_argument("--workspace", required=True)
    p.add_argument("--labeled", type=int, help="N random masked pool images start labeled (0 = all masked)")
    p.add_argument("--seed", type=int, help="seed of the random initial labeled set")
    p.add_argument("--labeled-list", help="a list file whose images start labeled")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if any input was skipped")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("status", help="print the pool: states, rounds, class pixels")
    p.add_argument("--workspace", required=True)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="write labeled masks as VOC-layout PNGs plus split files")
    p.add_argument("--workspace", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--link", action="store_true", help="symlink images instead of copying them")
    p.add_argument("--force", action="store_true",
                   help="export into a folder that holds other files or overlaps the dataset/workspace (files "
                        "already there are still never replaced)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("train", help="train DSSN (or the supervised baseline) on a workspace or split files",
                       description="On a workspace: trains on its labeled + unlabeled pool and records the "
                                   "model as a new round. From split files: --config C --labeled-list L "
                                   "[--unlabeled-list U] [--val-list V] --out DIR [--data ROOT]. Runs under "
                                   "torchrun as well (one shard of the data per rank).")
    p.add_argument("--workspace")
    _config_args(p, required=False)
    p.add_argument("--labeled-list")
    p.add_argument("--unlabeled-list")
    p.add_argument("--val-list")
    p.add_argument("--data", help="root the split files' paths are relative to (default: dataset.root)")
    p.add_argument("--out", help="run folder for split-file training")
    p.add_argument("--method", choices=["dssn", "supervised"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-iters", type=int)
    p.add_argument("--resume", action="store_true",
                   help="split files: continue the interrupted run (a workspace's unfinished round always continues)")
    p.add_argument("--stop-after", type=int, help="checkpoint and stop after N steps (continue with --resume)")
    p.add_argument("--warm-start", action="store_true", help="start a new round from the previous round's model")
    p.add_argument("--restart-round", action="store_true",
                   help="train an unfinished round again from its start with the current settings")
    p.add_argument("--init-weights", help="warm start from this model.pt (e.g. the previous round's)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score the unlabeled pool with the latest round's model")
    p.add_argument("--workspace", required=True)
    _config_args(p, required=False)
    p.add_argument("--strategy", help=f"compute the scores this strategy needs (default: acquire.strategy); "
                                       f"{_known('strategies', full_help)}")
    p.add_argument("--scores", help=f"comma-separated score names instead; {_known('scores', full_help)}")
    p.add_argument("--unit", choices=["image", "region"], help="region: also the region scores the strategy needs "
                                                               "(default: acquire.unit)")
    p.add_argument("--round", type=int, help="score with this round's model (default: the latest)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("select", help="queue the next images to label from stored scores")
    p.add_argument("--workspace", required=True)
    _config_args(p, required=False)
    p.add_argument("--strategy", help=f"default: acquire.strategy; {_known('strategies', full_help)}")
    p.add_argument("--unit", choices=["image", "region"], help="queue whole images or regions (default: acquire.unit)")
    p.add_argument("--budget", type=int, help="images to queue (default: acquire.budget); regions with --unit "
                                              "region (default: acquire.region_budget)")
    p.add_argument("--round", type=int)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("simulate", help="the active-learning benchmark with a simulated annotator")
    _config_args(p)
    p.add_argument("--data", help="dataset root (default: dataset.root)")
    p.add_argument("--out", required=True)
    p.add_argument("--strategies", default="random,dssn",
                   help=f"comma-separated (default random,dssn); {_known('strategies', full_help)}")
    p.add_argument("--arms", help="instead of --strategies: comma-separated NAME=STRATEGY[:METHOD][:scratch], e.g. "
                                  "scratch=random:supervised:scratch,random=random,dssn=dssn (scratch: the person "
                                  "draws from scratch, no pre-annotation)")
    p.add_argument("--init", type=int, default=16, help="initial random labeled images")
    p.add_argument("--budget", type=int, default=16, help="images labeled per round (arms in region mode: "
                                                          "--region-budget)")
    p.add_argument("--unit", choices=["image", "region"], default="image",
                   help="the unit of every arm (an arm can also say it: dssn_regions=dssn:region)")
    p.add_argument("--region-budget", type=int, help="regions per round in region arms (default: "
                                                     "acquire.region_budget)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--full", action="store_true", help="also train once on every pool label")
    p.add_argument("--warm-start", action="store_true", help="start each round from the previous round's model")
    p.add_argument("--device")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("ui", help="open the correction editor in the browser (queued images, most useful first)")
    p.add_argument("--workspace", required=True)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p.add_argument("--port", type=int, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    p.add_argument("--auth-file", help="a file whose first line is USER:PASSWORD, for a login page")
    p.add_argument("--auth", help="USER:PASSWORD (shown to other users by ps: prefer ANNOTASSIST_AUTH=USER:PASSWORD "
                                  "or --auth-file)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("synth", help="write the synthetic demo set (list layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--num-pool", type=int, default=300)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("push", help="send queued images with their pseudo-masks to Label Studio as tasks",
                       description="API key from LABEL_STUDIO_API_KEY (legacy token or personal access token). "
                                   "Images are served from local-files storage when they lie under "
                                   "LOCAL_FILES_DOCUMENT_ROOT (or --document-root), uploaded otherwise.")
    p.add_argument("--workspace", required=True)
    p.add_argument("--to", choices=["labelstudio"], default="labelstudio")
    p.add_argument("--url", required=True, help="Label Studio's address, e.g. http://localhost:8080")
    p.add_argument("--round", type=int, help="push this round's pseudo masks (default: each image's newest)")
    p.add_argument("--project", help="project title (default: derived from the workspace)")
    p.add_argument("--document-root", help="the server's LOCAL_FILES_DOCUMENT_ROOT, if it shares this disk")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="bring submitted Label Studio annotations back as human masks")
    p.add_argument("--workspace", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--project", help="project title (default: derived from the workspace)")
    p.add_argument("--unpainted", default="ignore", help="what unpainted pixels become: ignore (255) or a class")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("serve", help="serve the workspace as a Label Studio ML backend (pre-annotations, training)",
                       description="Label Studio's ML backend protocol: /health, /setup, /predict (the round's "
                                   "pseudo-masks as brush predictions), /webhook (submitted annotations go into the "
                                   "pool at once; 'Start training' runs the next round). Connect it in Label "
                                   "Studio under Settings > Model. Key from LABEL_STUDIO_API_KEY; optional basic "
                                   "auth from ANNOTASSIST_AUTH=USER:PASSWORD.")
    p.add_argument("--workspace", required=True)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--url", help="Label Studio's address for images and annotations (default: LABEL_STUDIO_URL, "
                                 "else the address Label Studio gives when it connects)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    p.set_defaults(func=cmd_serve)
    return parser


def _unknown_options(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], str]:
    """Options the verb does not know, by name only: argparse would echo what follows them, and that may be a
    secret (`--api-key KEY`). Abbreviations argparse accepts are known."""
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    known, verb, unknown = set(parser._option_string_actions), "", []
    for tok in argv:
        if tok == "--":
            break
        if not verb and tok in verbs:
            verb = tok
            known |= set(verbs[tok]._option_string_actions)
            continue
        if len(tok) < 2 or not tok.startswith("-") or tok[1].isdigit() or tok[1] == ".":
            continue  # a value (negative numbers included)
        name = tok.split("=", 1)[0] if tok.startswith("--") else tok[:2]
        if not any(k == name or (name.startswith("--") and k.startswith(name)) for k in known):
            unknown.append(name)
    return unknown, verb


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(full_help=any(a in ("-h", "--help") for a in argv))
    unknown, verb = _unknown_options(parser, argv)
    if unknown:
        where = f"annotassist {verb}" if verb else "annotassist"
        parser.exit(2, f"{where}: error: unknown option {', '.join(unknown)} (its value is not shown: it may be a "
                       f"secret); see '{where} --help'\n")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AnnotassistError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `annotassist status | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except sqlite3.DatabaseError as e:  # a pool damaged after it was opened (opening checks it: workspace.py)
        from .workspace import damaged_message

        if os.environ.get("ANNOTASSIST_DEBUG"):
            raise

        where = Path(getattr(args, "workspace", None) or ".") / "pool.sqlite"
        print(f"error: {damaged_message(where, e)}", file=sys.stderr)
        return 2
    except OSError as e:
        # what the machine refused (full disk, read-only or forbidden folder): one line, not a traceback
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG):
            raise
        print(f"error: {e.filename or 'a file'}: {e.strerror}; free disk space or fix the permissions there, then "
              "run the command again", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
