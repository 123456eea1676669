"""Bad input as a careless or hostile user gives it: one clear line naming the thing and the fix, exit 2, nothing
changed, never a traceback (issue: "no tracebacks for bad input"). Real files, real `python -m annotassist`.

A read-only workspace is made really read-only: CI runs as root, which ignores file modes, so the command runs
in a private mount namespace where the workspace is bind-mounted read-only (`unshare -m`)."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from annotassist.lock import LOCK_FILE
from annotassist.workspace import Workspace

from conftest import REPO, list_config_dict, write_yaml

ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
ENV.pop("ANNOTASSIST_AUTH", None)


def cli(*args, cwd: Path, env: dict | None = None, timeout: int = 300, prefix=()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "annotassist", *map(str, args)], cwd=cwd,
                          env=env or ENV, capture_output=True, text=True, timeout=timeout)


def clean_error(proc, *parts) -> str:
    """Exit 2, no traceback, the parts in the message; returns the message."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr)
    return proc.stderr


def files(root: Path) -> dict[str, str]:
    """Every file under root with the sha256 of its bytes (what 'nothing changed' means), but the lock file,
    where each writer that starts notes its pid."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


@pytest.fixture
def ws(synth_copy, tmp_path) -> Path:
    """A workspace made by `annotassist init` on a private copy of the small set (4 of 24 labeled)."""
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict(initial_labeled=4))
    r = cli("init", "--config", cfg, "--data", synth_copy, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path / "ws"


# -- a read-only workspace --------------------------------------------------------------------------------

def _can_mount() -> bool:
    probe = Path("/tmp") / f"annotassist-ro-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {probe} {probe} && mount -o remount,bind,ro "
                            f"{probe} {probe} && ! touch {probe}/f 2>/dev/null"], capture_output=True)
        return r.returncode == 0 and not (probe / "f").exists()
    except FileNotFoundError:
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def read_only(path: Path) -> tuple[str, ...]:
    """A command prefix that runs the command with `path` read-only: a read-only bind mount in a private mount
    namespace as root (root ignores modes); as another user, file modes do it (see `writable_again`)."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return ()
    if not _can_mount():
        pytest.skip("root here, but 'unshare -m' + a read-only bind mount is not permitted: no way to make a "
                    "workspace read-only for root on this machine")
    # the probe write must fail inside, or the test would prove nothing
    return ("unshare", "-m", "sh", "-c", f'mount --bind "{path}" "{path}" && mount -o remount,bind,ro "{path}" '
            f'"{path}" && ! touch "{path}/.probe" 2>/dev/null && exec "$@"', "sh")


def writable_again(path: Path) -> None:
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_read_only_workspace_reads_work_and_writers_are_refused(ws, tmp_path):
    before = files(ws)
    ro = read_only(ws)
    try:
        # reads work as they are: status, export, report into another folder
        r = cli("status", "--workspace", ws, cwd=tmp_path, prefix=ro)
        assert r.returncode == 0, r.stderr
        assert "unlabeled" in r.stdout and "Traceback" not in r.stderr
        r = cli("export", "--workspace", ws, "--out", tmp_path / "e", cwd=tmp_path, prefix=ro)
        assert r.returncode == 0 and "exported 4 labeled, 20 unlabeled, 8 val images" in r.stdout, r.stderr
        clean_error(cli("report", "--workspace", ws, cwd=tmp_path, prefix=ro), "read-only", "--out DIR")
        r = cli("report", "--workspace", ws, "--out", tmp_path / "plots", cwd=tmp_path, prefix=ro)
        assert r.returncode == 0, r.stderr
        # every writer: one line naming the workspace and the fix
        for verb, *extra in (("select", "--budget", "2"), ("train", "--device", "cpu"), ("score",), ("pull",
                             "--url", "http://127.0.0.1:9"), ("push", "--url", "http://127.0.0.1:9")):
            msg = clean_error(cli(verb, "--workspace", ws, *extra, cwd=tmp_path, prefix=ro),
                              f"the workspace {ws} is read-only", f"'{verb}' changes the pool", "cp -a")
            assert msg.count("\n") == 1, msg
        clean_error(cli("loop", "--project", ws, "--device", "cpu", cwd=tmp_path, prefix=ro), "read-only", "'loop'")
        clean_error(cli("init", "--config", ws / "config.yaml", "--workspace", ws, cwd=tmp_path, prefix=ro),
                    "read-only", "'init'")
        clean_error(cli("ui", "--workspace", ws, cwd=tmp_path, prefix=ro), "read-only")
    finally:
        writable_again(ws)
    assert files(ws) == before


# -- a damaged pool.sqlite --------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "pages"])
def test_damaged_pool_is_named_and_left_as_it_is(ws, tmp_path, damage):
    db = ws / "pool.sqlite"
    data = db.read_bytes()
    if damage == "empty":
        db.write_bytes(b"")
        expect = "is empty (0 bytes)"
    elif damage == "truncated":
        db.write_bytes(data[:8192])
        expect = "is truncated (8192 of"
    elif damage == "garbage":
        db.write_bytes(b"not a database\n" * 100)
        expect = "is not a SQLite database"
    else:  # pages in the middle overwritten: the header is fine, SQLite finds the damage when it reads them
        db.write_bytes(data[:4096 * 2] + b"\xff" * (len(data) - 4096 * 3) + data[-4096:])
        expect = "is damaged"
    before = files(ws)
    for args in (("status", "--workspace", ws), ("select", "--workspace", ws), ("report", "--workspace", ws),
                 ("export", "--workspace", ws, "--out", tmp_path / "e"), ("loop", "--project", ws),
                 ("init", "--config", ws / "config.yaml", "--data", tmp_path / "data", "--workspace", ws)):
        clean_error(cli(*args, cwd=tmp_path), f"{db} {expect}", "backup")
    assert files(ws) == before  # an empty file is not grown into a new database
    assert not (tmp_path / "e").exists()


def test_a_damaged_pool_is_refused_before_torch_loads(ws, tmp_path):
    """Each verb checks the workspace before it loads torch (~2 s of imports): a refusal is immediate."""
    (ws / "pool.sqlite").write_bytes(b"")
    code = ("import sys; from annotassist.cli import main; "
            "rcs = [main(a) for a in (['loop', '--project', sys.argv[1]], ['select', '--workspace', sys.argv[1]], "
            "['score', '--workspace', sys.argv[1]], ['train', '--workspace', sys.argv[1]])]; "
            "print(rcs, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(ws)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.split("\n")[-2] == "[2, 2, 2, 2] False", (r.stdout[-2000:], r.stderr[-2000:])
    assert r.stderr.count("is empty (0 bytes)") == 4, r.stderr


# -- --workspace that is a file ---------------------------------------------------------------------------

def test_workspace_that_is_a_file(tmp_path, synth_dir):
    f = tmp_path / "afile"
    f.write_text("mine")
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict())
    for args in (("status",), ("select",), ("score",), ("train",), ("report",), ("ui",),
                 ("export", "--out", tmp_path / "e"), ("init", "--config", cfg, "--data", synth_dir)):
        clean_error(cli(args[0], "--workspace", f, *args[1:], cwd=tmp_path), f"--workspace {f} is a file")
    clean_error(cli("loop", "--project", "demo", "--workspace", f, cwd=tmp_path), "is a file")
    # a file on the way to it
    clean_error(cli("init", "--config", cfg, "--data", synth_dir, "--workspace", f / "ws", cwd=tmp_path),
                f"{f / 'ws'}", "Not a directory")
    assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "c.yaml"]


# -- images whose header claims 100000x100000 pixels ------------------------------------------------------

def bomb_png(path: Path, w: int = 100_000, h: int = 100_000) -> None:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb, or a damaged header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
                     chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_image_and_mask_are_skipped_and_the_rest_kept(synth_copy, tmp_path):
    bomb_png(synth_copy / "images/train/00003.png")  # line 4 of train.txt
    bomb_png(synth_copy / "masks/train/00005.png")  # line 6
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict())
    r = cli("init", "--config", cfg, "--data", synth_copy, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "added 30 images" in r.stdout and "2 problem(s)" in r.stdout, r.stdout
    lst = synth_copy / "train.txt"
    lines = [ln for ln in r.stdout.splitlines() if "too many pixels" in ln]
    assert len(lines) == 2, r.stdout
    assert f"00003.png (line 4 of {lst})" in lines[0] and "cannot be read as an image" in lines[0]
    assert f"00005.png (line 6 of {lst})" in lines[1] and "cannot be read as a mask image" in lines[1]
    assert "replace or remove the file" in lines[0]
    with Workspace(tmp_path / "ws") as w:
        names = {x.name for x in w.images("pool")}
        assert len(names) == 22 and "images/train/00003" not in names and "images/train/00005" not in names


def test_content_errors_give_the_list_line(synth_copy, tmp_path):
    """The README promises file and line for every bad input: an image or mask whose content is wrong is
    named with the list line that brought it in."""
    from PIL import Image

    data = (synth_copy / "images/train/00002.png").read_bytes()
    (synth_copy / "images/train/00002.png").write_bytes(data[: len(data) // 3])  # line 3: truncated
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(synth_copy / "masks/train/00007.png")  # line 8: size
    val = synth_copy / "val.txt"
    (synth_copy / "images/val/00001.png").write_bytes(b"")  # line 2 of val.txt
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict())
    r = cli("init", "--config", cfg, "--data", synth_copy, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"(line 3 of {synth_copy / 'train.txt'}): cannot be read as an image" in out, out
    assert f"(line 8 of {synth_copy / 'train.txt'}): mask is 10x10 but its image 00007.png is 64x64" in out, out
    assert f"(line 2 of {val}): cannot be read as an image" in out, out


# -- a mask file deleted from the workspace ---------------------------------------------------------------

def test_lost_mask_files_are_reported_by_status_and_init_rewrites_the_ground_truth_ones(ws, tmp_path):
    with Workspace(ws) as w:
        labeled = w.images("pool", "labeled")
        truth = w.label_mask(labeled[0].id)
        corrected = labeled[1]
        w.add_mask(corrected.id, w.read_label(corrected.id), "human", source="editor test")
        human_path = w.masks(corrected.id, "human")[-1].path
        truth_bytes = truth.path.read_bytes()
    truth.path.unlink()
    human_path.unlink()
    r = cli("status", "--workspace", ws, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: 2 mask file(s) are missing" in r.stdout and "2 of them current labels" in r.stdout, r.stdout
    assert labeled[0].name in r.stdout and corrected.name in r.stdout
    assert f"restore {ws / 'masks'} from a backup" in r.stdout
    assert f"annotassist init --config {ws / 'config.yaml'} --data" in r.stdout
    clean_error(cli("export", "--workspace", ws, "--out", tmp_path / "e", cwd=tmp_path), "cannot be read",
                "nothing was exported")
    assert not (tmp_path / "e").exists()
    # the fix status names: init rewrites the ground-truth file from the dataset, and names the lost correction
    with Workspace(ws) as w:
        data_root = w.data_root
    r = cli("init", "--config", ws / "config.yaml", "--data", data_root, "--workspace", ws, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rewrote 1 ground-truth mask file(s)" in r.stdout, r.stdout
    assert "1 mask file(s) are lost from the workspace" in r.stdout and corrected.name in r.stdout
    assert truth.path.read_bytes() == truth_bytes and not human_path.exists()
    r = cli("status", "--workspace", ws, cwd=tmp_path)
    assert "warning: 1 mask file(s) are missing" in r.stdout and labeled[0].name not in r.stdout.split("warning")[1]


# -- the editor on a port in use --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_on_a_port_in_use(ws, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        clean_error(cli("ui", "--workspace", ws, "--port", port, cwd=tmp_path, timeout=120),
                    f"port {port} on 127.0.0.1 is in use", "--port N")


# -- secrets ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["status", "--workspace", "W", "--api-key", "SECRET-1234"],
                                  ["status", "--workspace", "W", "--api-key=SECRET-1234"],
                                  ["--api-key", "SECRET-1234", "status", "--workspace", "W"],
                                  ["push", "--workspace", "W", "--url", "http://x", "--key", "SECRET-1234"],
                                  ["status", "--workspace", "W", "-kSECRET-1234"]])
def test_unknown_options_are_refused_without_echoing_their_value(ws, tmp_path, argv):
    argv = [str(ws) if a == "W" else a for a in argv]
    r = cli(*argv, cwd=tmp_path)
    assert r.returncode == 2 and "unknown option" in r.stderr, r.stderr
    assert "SECRET" not in r.stdout + r.stderr, r.stderr
    assert "its value is not shown" in r.stderr


def _start_ui(ws: Path, *args, env: dict | None = None, until: str = "Running on local URL:"
              ) -> tuple[subprocess.Popen, str, list[str]]:
    """`annotassist ui` until it serves (or prints `until`); returns the process, its URL and what it printed
    so far."""
    proc = subprocess.Popen([sys.executable, "-m", "annotassist", "ui", "--workspace", str(ws), *map(str, args)],
                            env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if until in line:
            return proc, line.split("URL:")[1].strip().rstrip("/") if "URL:" in line else "", seen
        assert time.monotonic() < deadline, "".join(seen)
    proc.wait()
    raise AssertionError("".join(seen))


def test_auth_on_the_command_line_warns_and_a_file_or_the_environment_is_quiet(ws, tmp_path):
    import httpx

    # --auth says that ps shows it (the warnings come before the server starts: no need to wait for it)
    port = free_port()
    proc, url, seen = _start_ui(ws, "--port", port, "--auth", "ann:pw-on-the-command-line", until="warning:")
    proc.kill()
    proc.wait()
    assert any("--auth shows the password to every user of this machine (ps)" in s for s in seen), seen
    # --auth-file: the login page asks for it; no warning about ps
    secret = tmp_path / "auth"
    secret.write_text("ann:s3cret-from-a-file\n")
    secret.chmod(0o600)
    proc, url, seen = _start_ui(ws, "--port", free_port(), "--auth-file", secret)
    try:
        assert not any("--auth shows" in s or "can be read by other users" in s for s in seen), seen
        assert httpx.get(f"{url}/config", timeout=10).status_code == 401
        s = httpx.Client()
        assert s.post(f"{url}/login", data={"username": "ann", "password": "s3cret-from-a-file"}, timeout=10).is_success
        assert s.get(f"{url}/config", timeout=10).status_code == 200
    finally:
        proc.kill()
        proc.wait()
    assert all("s3cret" not in s for s in seen)
    # a file others can read is named; a missing or malformed file, or both options, is a clean error
    secret.chmod(0o644)
    proc, url, seen = _start_ui(ws, "--port", free_port(), "--auth-file", secret, until="warning:")
    proc.kill()
    proc.wait()
    assert any(f"{secret} can be read by other users (mode 644); chmod 600" in s for s in seen), seen
    clean_error(cli("ui", "--workspace", ws, "--auth-file", tmp_path / "nope", cwd=tmp_path), "--auth-file",
                "cannot be read")
    (tmp_path / "bad").write_text("no-colon-here\n")
    msg = clean_error(cli("ui", "--workspace", ws, "--auth-file", tmp_path / "bad", cwd=tmp_path), "USER:PASSWORD")
    assert "no-colon-here" not in msg
    clean_error(cli("ui", "--workspace", ws, "--auth-file", secret, "--auth", "a:b", cwd=tmp_path), "not both")
