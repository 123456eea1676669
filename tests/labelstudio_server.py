"""A real Label Studio server for the integration tests, from the .ls-venv that scripts/labelstudio.sh makes.

Started once per test session on a free loopback port with a temporary data dir, a known user and legacy
token, local-files serving under a temporary document root, webhooks and ML backends on 127.0.0.1 allowed;
stopped after (the `ls` fixture in conftest.py). ANNOTASSIST_LS_SERVER=FILE.json reuses a server started this
way (a JSON of Server's fields) instead, which saves the start-up when running the tests again and again.

A first start runs Label Studio's database migrations (~30 s of one core on 2 cores). `python
tests/labelstudio_server.py --template` starts and stops a server once and keeps its data folder (migrated, with
the test user and token) as a template in the .ls-venv; scripts/test.sh makes it beside the first tests, and
every later start begins from a copy of it (~5 s). Each session still gets its own server and its own database.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import sys
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import json
from contextlib import contextmanager

import httpx

REPO = Path(__file__).resolve().parent.parent
LS_VENV = Path(os.environ.get("LS_VENV", REPO / ".ls-venv"))
if not LS_VENV.is_absolute():
    LS_VENV = REPO / LS_VENV
START_TIMEOUT = 180  # first start runs the database migrations (~35 s on 2 cores, more when busy)
# the migrated data folder, one per Label Studio install (a new install, a new .ls-venv, a new template)
TEMPLATE = LS_VENV / "test-data-template"


@dataclass
class Server:
    url: str
    token: str
    email: str
    password: str
    document_root: Path


def fail(message: str, pytrace: bool = False):
    """A test failure under pytest; an error elsewhere (`--template` runs with Label Studio's own python, which
    has httpx but no pytest, while the project's .venv is still installing)."""
    if "pytest" in sys.modules:
        import pytest

        pytest.fail(message, pytrace=pytrace)
    raise RuntimeError(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: Path, from_template: bool = True):
    exe = LS_VENV / "bin" / "label-studio"
    if not exe.exists():
        fail(f"Label Studio is not installed at {LS_VENV}: run 'bash scripts/labelstudio.sh' first "
             "(it makes the server's own virtual environment; scripts/test.sh does it for you)", pytrace=False)
    root, data = tmp / "document-root", tmp / "ls-data"
    root.mkdir()
    if from_template:
        wait_for_template()
    if from_template and TEMPLATE.is_dir():
        shutil.copytree(TEMPLATE, data)
    else:
        data.mkdir()
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}", "annotassist-test-token-0123", "tester@example.com",
                    "tester-password-1", root)
    env = {**os.environ,
           "LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_BASE_DATA_DIR": str(data),
           "LABEL_STUDIO_USERNAME": server.email, "LABEL_STUDIO_PASSWORD": server.password,
           "LABEL_STUDIO_USER_TOKEN": server.token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(root),
           "SSRF_PROTECTION_ENABLED": "false", "ML_BLOCK_LOCAL_IP": "false", "DJANGO_DB": "sqlite"}
    env.pop("LABEL_STUDIO_API_KEY", None)
    log = open(tmp / "label-studio.log", "w")
    proc = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port",
                             str(port)], cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            fail(f"Label Studio exited with {proc.returncode} while starting; log: "
                 f"{(tmp / 'label-studio.log').read_text()[-3000:]}", pytrace=False)
        try:
            if httpx.get(server.url + "/health", timeout=2).json().get("status") == "UP":
                break
        except (httpx.HTTPError, ValueError):
            pass
        if time.time() > deadline:
            stop(proc)
            fail(f"Label Studio did not answer /health within {START_TIMEOUT} s; log: "
                 f"{(tmp / 'label-studio.log').read_text()[-3000:]}", pytrace=False)
        time.sleep(1)
    return server, proc, log


def stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group (label-studio runs Django's server as a child)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def session(tmp_path_factory):
    """The session's server (a generator for a pytest fixture): reused from ANNOTASSIST_LS_SERVER, or started."""
    reuse = os.environ.get("ANNOTASSIST_LS_SERVER")
    if reuse:
        d = json.loads(Path(reuse).read_text())
        yield Server(d["url"], d["token"], d["email"], d["password"], Path(d["document_root"]))
        return
    tmp = tmp_path_factory.mktemp("labelstudio")
    server, proc, log = start(tmp)
    try:
        yield server
    finally:
        stop(proc)
        log.close()


# Debian's chromium in a container: no sandbox, no GPU, nothing that phones home while a test waits for a canvas
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextmanager
def logged_in_page(ls: Server):
    """A chromium page logged in to the server as the test user (the browser tests of every Label Studio task)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{ls.url}/user/login/")
            page.fill("input[name=email]", ls.email)
            page.fill("input[name=password]", ls.password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            assert "/user/login" not in page.url, "login to the Label Studio test server failed"
            yield page
        finally:
            browser.close()


def screenshot_when(page, path: Path, ready, timeout: float = 20.0):
    """Screenshot `page` into `path` until `ready(pixels)` holds, and return those pixels (the last ones after
    `timeout`, for the test's own assertion to report). Label Studio paints its brush layers some time after the
    canvas appears, later on a busy machine: polling waits as long as that takes and no longer."""
    deadline = time.time() + timeout
    while True:
        page.screenshot(path=str(path))
        px = pixels_of(path)
        if ready(px) or time.time() > deadline:
            return px
        page.wait_for_timeout(250)


def pixels_of(path: Path):
    """A screenshot's RGB pixels as ints (room for the differences the colour tests take)."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def magenta_of(px):
    """Where a screenshot shows magenta: the 'disc' class of the tests' palette, which Label Studio's brush draws
    translucent over the image."""
    return (px[..., 0] > 150) & (px[..., 2] > 150) & (px[..., 1] < 110)


def annotations_when_submitted(api, task: int, timeout: float = 20.0) -> list:
    """The task's annotations once the browser's submit has reached the server (or [] after `timeout`)."""
    deadline = time.time() + timeout
    while True:
        anns = api.get(f"/api/tasks/{task}").json()["annotations"]
        if anns or time.time() > deadline:
            return anns
        time.sleep(0.25)


def _template_lock(flags: int):
    """TEMPLATE's lock file, locked with `flags` (held while a template is being made; it goes with the process,
    so a killed maker releases it), or None if the flags say not to wait and it is held."""
    f = open(str(TEMPLATE) + ".lock", "a")
    try:
        fcntl.flock(f, flags)
    except BlockingIOError:
        f.close()
        return None
    return f


def wait_for_template(timeout: float = START_TIMEOUT) -> None:
    """If a template is being made (scripts/test.sh starts that beside the first tests), wait for it: a copy
    starts in ~5 s, and migrating here too would take ~30 s more of the cores the maker is using."""
    deadline = time.time() + timeout
    while (lock := _template_lock(fcntl.LOCK_SH | fcntl.LOCK_NB)) is None and time.time() < deadline:
        time.sleep(0.5)
    if lock is not None:
        lock.close()


def make_template() -> None:
    """Start a server once on a fresh data folder (the migrations run) and keep that folder as TEMPLATE. Made
    under TEMPLATE's lock (tests that start a server meanwhile wait for it), written beside it and renamed into
    place, so a killed run leaves no half-made template."""
    with _template_lock(fcntl.LOCK_EX):
        if TEMPLATE.is_dir():
            return
        work = Path(str(TEMPLATE) + f".making-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            _, proc, log = start(work, from_template=False)
            stop(proc)
            log.close()
            os.replace(work / "ls-data", TEMPLATE)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["--template"]:
        sys.exit("usage: python tests/labelstudio_server.py --template")
    t0 = time.time()
    make_template()
    print(f"tests/labelstudio_server.py: migrated Label Studio data folder at {TEMPLATE} ({time.time() - t0:.0f} s)",
          file=sys.stderr)
