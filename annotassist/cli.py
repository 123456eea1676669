"""The `annotassist` command. Thin: each verb parses its arguments and calls one function."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import AnnotassistError


def _config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="YAML config (see configs/)")
    p.add_argument("--profile", help="apply a named profile of the config, e.g. cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=3 (repeatable)")


def _load(args):
    from .config import load_config
    return load_config(args.config, profile=args.profile, overrides=args.set)


def cmd_init(args) -> int:
    from .workspace import Workspace

    cfg = _load(args)
    if args.labeled is not None:
        cfg.pool.initial_labeled = args.labeled
    if args.seed is not None:
        cfg.pool.seed = args.seed
    data = Path(args.data or cfg.dataset.root or (Path(args.workspace) / "data"))
    if cfg.dataset.layout != "synthetic" and not data.is_dir():
        raise AnnotassistError(f"data root {data} not found; pass --data DIR or set dataset.root in {cfg.source}")
    ws_path = Path(args.workspace)
    if (ws_path / "pool.sqlite").exists():
        ws = Workspace(ws_path)
        print(f"updating existing workspace {ws_path} (masks already in it are kept)")
    else:
        ws = Workspace.create(ws_path, cfg, data)
    with ws:
        report = ws.sync_from_source()
        if args.labeled_list:
            _label_from_list(ws, Path(args.labeled_list))
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
        print()
        from .report import status_text
        print(status_text(ws))
    return 1 if (report.problems and args.strict) else 0


def _label_from_list(ws, list_file: Path) -> None:
    """Mark the images named in a list file (first column, as in split files) labeled with their source mask."""
    from .data.layouts import _name

    if not list_file.is_file():
        raise AnnotassistError(f"{list_file}: labeled list not found")
    wanted = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        first = line.split()[0]
        name = _name(ws.data_root / first, ws.data_root)
        try:
            wanted.append(ws.image_by_name(name))
        except AnnotassistError:
            raise AnnotassistError(f"{list_file}:{lineno}: image {first} is not in the pool") from None
    for rec in wanted:
        if rec.state != "labeled":
            ws.add_mask(rec.id, ws.read_oracle(rec.id), "ground_truth", source=str(rec.source_mask_path))


def cmd_status(args) -> int:
    from .report import status_text
    from .workspace import Workspace

    with Workspace(args.workspace) as ws:
        print(status_text(ws))
    return 0


def cmd_export(args) -> int:
    from .export import export
    from .workspace import Workspace

    with Workspace(args.workspace) as ws:
        summary = export(ws, args.out, link=args.link)
    print(f"exported {summary['labeled_count']} labeled, {summary['unlabeled_count']} unlabeled, "
          f"{summary['val_count']} val images to {args.out}")
    return 0


def cmd_synth(args) -> int:
    from .data.synthetic import generate

    out = generate(args.out, args.num_pool, args.num_val, args.size, args.seed)
    print(f"wrote the synthetic set to {out} (train.txt: {args.num_pool}, val.txt: {args.num_val})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="annotassist",
        description="Active labeling for semantic segmentation: train DSSN on labeled + unlabeled images, "
                    "pick what to label next, hand pseudo-masks to a person for correction.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("init", help="create or update a workspace from a dataset")
    _config_args(p)
    p.add_argument("--data", help="dataset root (default: dataset.root of the config)")
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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("synth", help="write the synthetic demo set (list layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--num-pool", type=int, default=300)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AnnotassistError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
