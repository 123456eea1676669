"""Shared fixtures: a small generated dataset, config helpers, a real CamVid workspace."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from annotassist.config import from_dict, load_config
from annotassist.data.synthetic import CLASSES, generate
from annotassist.importer import import_dataset

REPO = Path(__file__).resolve().parent.parent
# tests whose module-scoped fixtures are costly stay together; every Label Studio test shares one server
LABELSTUDIO_FILES = ("test_labelstudio.py", "test_labelstudio_backend.py", "test_labelstudio_regions.py")


# The costliest groups, costliest first (seconds on 2 cores, --durations=0, 2026-12-07: 107, 79, 140, 53, 51, 50,
# 46, 40, 36, 31, 26, 20): scripts/test.sh hands groups to the workers in collection order, and a long group
# that starts last keeps one worker busy while the other idles. Every other group follows in file order. The
# Label Studio group goes third, not first: its server starts from a migrated data folder that scripts/test.sh
# makes beside the first tests (~35 s), and by the time a worker gets there it is ready.
COSTLIEST_FIRST = ("test_loop.py", "test_rounds_config.py", "labelstudio", "test_bad_input.py", "test_starter.py",
                   "test_regions.py", "test_trainer.py", "test_acquire.py", "test_gpu_suite.py", "test_lock.py",
                   "test_editor.py", "test_dssn_short.py")


def xdist_group_of(item) -> str:
    name = item.path.name
    return "labelstudio" if name in LABELSTUDIO_FILES else name


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`, scripts/test.sh): a file's tests run on one worker, so its module
    fixtures are built once, and all Label Studio tests on one worker, so one server starts. The groups are
    ordered costliest first (a stable sort: each file's tests stay together and in their order)."""
    rank = {g: i for i, g in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(xdist_group_of(item), len(rank)))
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))


def pytest_configure(config):
    """Each xdist worker gets its share of the cores, and so do the CPU-heavy subprocesses its tests start
    (tiny training rounds, servers), which inherit OMP_NUM_THREADS: at torch's default every one of them takes
    all the cores and the workers' threads fight (measured: tests/test_loop.py on 2 workers, 2 cores, 189 s
    with the default, 130 s with one thread each). A caller's own OMP_NUM_THREADS wins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
CONFIGS = REPO / "configs"
# the shared data folder sits beside the checkout (CI clones beside it too)
CAMVID = REPO.parent / "shared" / "data" / "camvid"
CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist"]

needs_camvid = pytest.mark.skipif(not (CAMVID / "train.txt").is_file(), reason="CamVid not at " + str(CAMVID))


def list_config_dict(root: str | Path = "", initial_labeled: int = 0, seed: int = 0, **dataset) -> dict:
    """A minimal list-layout config for the synthetic classes."""
    d = {"name": "synth", "layout": "list", "root": str(root), "pool": "train.txt", "val": "val.txt",
         "classes": list(CLASSES), "ignore_index": 255}
    d.update(dataset)
    return {"dataset": d, "pool": {"initial_labeled": initial_labeled, "seed": seed}}


def lopsided_conv(seed: int = 1):
    """A tiny segmentation-like model that is not mirror-symmetric (a 1x3 conv with a random kernel, then
    BatchNorm), its output at the input's size: for checks of mirror views and of BatchNorm modes. torch is
    imported here, not at the top: pytest_configure sets the thread count before anything loads it."""
    import torch

    conv = torch.nn.Conv2d(3, 4, (1, 3), padding=(0, 1), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 3, 1, 3, generator=torch.Generator().manual_seed(seed)))
    return torch.nn.Sequential(conv, torch.nn.BatchNorm2d(4))


def make_config(overrides: list[str] | None = None, profile: str | None = None, **kw):
    """`from_dict` on `list_config_dict(**kw)` with `--set`-style overrides."""
    return from_dict(list_config_dict(**kw), source="<test>", profile=profile, overrides=overrides)


def config_from_file(name: str, overrides: list[str] | None = None, profile: str | None = None):
    """Load configs/<name>.yaml (or any path) with `--set`-style overrides."""
    path = Path(name)
    if not path.is_file():
        path = CONFIGS / (name if name.endswith(".yaml") else f"{name}.yaml")
    return load_config(path, profile=profile, overrides=overrides)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def save_png(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """24 pool + 8 val generated images of 64x64 (read-only: copy it with `synth_copy` to change it)."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, num_pool=24, num_val=8, size=64, seed=0, progress=False)
    return out


@pytest.fixture
def synth_copy(synth_dir, tmp_path) -> Path:
    """A private, writable copy of the small synthetic set."""
    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst


@pytest.fixture
def synth_ws(synth_copy, tmp_path):
    """A synced workspace on a private copy of the small set: 4 of 24 pool images labeled."""
    from annotassist.workspace import Workspace

    cfg = make_config(initial_labeled=4)
    ws = Workspace.create(tmp_path / "ws", cfg, synth_copy)
    report = import_dataset(ws, progress=False)
    assert report.problems == []
    yield ws
    ws.close()


@pytest.fixture(scope="session")
def camvid_ws(tmp_path_factory):
    """A workspace on the real CamVid set with configs/camvid.yaml (seed 0, 16 labeled). Do not modify."""
    if not (CAMVID / "train.txt").is_file():
        pytest.skip("CamVid not available")
    from annotassist.workspace import Workspace

    cfg = config_from_file("camvid")
    root = tmp_path_factory.mktemp("camvid_ws") / "ws"
    ws = Workspace.create(root, cfg, CAMVID)
    report = import_dataset(ws, progress=False)
    ws.sync_report = report
    yield ws
    ws.close()


def make_thin_set(root: Path, n: int = 60, masked: int = 30, size: int = 160, seed: int = 0) -> Path:
    """A grayscale two-class set with thin structures (vessel-like curves 2-3 px wide on a textured
    background), laid out as root/images/*.png and root/masks/*.png; masks are single-channel 0/255 (how
    binary masks are usually saved), only the first `masked` images have one."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        background = rng.normal(110, 18, (size, size)) + 25 * np.sin(xx / rng.uniform(9, 30) + rng.uniform(0, 6))
        vessel = np.zeros((size, size), bool)
        for _ in range(rng.integers(2, 5)):
            # a smooth random curve: a sinusoid across the image at a random angle, 2-3 px wide
            angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            amp, period, width = rng.uniform(6, 25), rng.uniform(40, 120), rng.uniform(1.0, 1.6)
            cy, cx = rng.uniform(0.2, 0.8, 2) * size  # the curve passes through a point inside the image
            u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
            v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
            vessel |= np.abs(v - amp * np.sin(2 * np.pi * u / period + phase)) < width
        image = np.where(vessel, background * 0.35 + 20, background)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(root / "images" / f"{i:03d}.png")
        if i < masked:
            Image.fromarray((vessel * 255).astype(np.uint8), mode="L").save(root / "masks" / f"{i:03d}.png")
    return root


# -- a real Label Studio server, one per session, for tests/test_labelstudio*.py --------------------------------

@pytest.fixture(scope="session")
def ls(tmp_path_factory):
    import labelstudio_server

    yield from labelstudio_server.session(tmp_path_factory)


@pytest.fixture(scope="session")
def synth_src(ls):
    """A small synthetic set inside the server's document root (copy it before changing it)."""
    out = ls.document_root / f"synth-{os.getpid()}"
    if not out.exists():
        generate(out, num_pool=10, num_val=2, size=96, seed=1, progress=False)
    return out


@pytest.fixture
def api(ls):
    """Label Studio's REST API as a person's tools call it (the test's stand-in for the person)."""
    import httpx

    with httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {ls.token}"}, timeout=60) as c:
        yield c
