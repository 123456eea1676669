"""scripts/test.sh counts on `--dist loadgroup` keeping a file's tests on one worker (its module fixtures, such as
a whole tiny loop, are built once) and every Label Studio test on one worker (one server starts). With pytest 9
and pytest-xdist 3.8 that silently stopped: each group split across the workers. This runs the repository's
grouping hook on two workers over a throwaway suite and checks where the tests ran."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

from conftest import COSTLIEST_FIRST, LABELSTUDIO_FILES, REPO

HOOK = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("repo_conftest", {str(REPO / "tests" / "conftest.py")!r})
repo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repo)
pytest_collection_modifyitems = repo.pytest_collection_modifyitems
"""

MODULE = """
import os
import pytest

def note(what):
    with open({log!r}, "a") as f:
        f.write(f"{{what}} {{__name__}} {{os.environ.get('PYTEST_XDIST_WORKER')}}\\n")

@pytest.fixture(scope="module")
def built_once():
    note("setup")

@pytest.mark.parametrize("k", range(4))
def test_uses_it(built_once, k):
    note("test")
"""


def run_suite(tmp_path, names: list[str], *pytest_args: str) -> subprocess.CompletedProcess:
    """A throwaway suite under the repository's grouping hook, its files named `names` (each test notes where it
    ran in tmp_path/log.txt), run by pytest with `pytest_args`."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(HOOK)
    for name in names:
        (suite / name).write_text(MODULE.format(log=str(tmp_path / "log.txt")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not this run's worker
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, str(suite)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def test_a_files_tests_and_the_label_studio_files_each_stay_on_one_worker(tmp_path):
    log = tmp_path / "log.txt"
    names = ["test_one.py", "test_two.py", "test_three.py", *LABELSTUDIO_FILES[:2]]
    run_suite(tmp_path, names, "-n", "2", "--dist", "loadgroup")
    workers, setups = defaultdict(set), defaultdict(int)
    for line in log.read_text().splitlines():
        what, module, worker = line.split()
        workers[module].add(worker)
        setups[module] += what == "setup"
    modules = [n[:-3] for n in names]
    assert sorted(workers) == sorted(modules)
    assert all(len(workers[m]) == 1 for m in modules), dict(workers)  # a file's tests on one worker
    assert all(setups[m] == 1 for m in modules), dict(setups)  # its module fixture built once
    ls = [n[:-3] for n in LABELSTUDIO_FILES[:2]]
    assert workers[ls[0]] == workers[ls[1]]  # the Label Studio files together: one server


def test_the_costliest_groups_go_out_first_and_each_file_stays_in_one_piece(tmp_path):
    """xdist hands the groups to the workers in collection order (scripts/test.sh: --no-loadscope-reorder): the
    groups conftest.COSTLIEST_FIRST names come first, in its order, then the rest in file order."""
    names = ["test_aaa.py", COSTLIEST_FIRST[1], "test_zzz.py", LABELSTUDIO_FILES[1], LABELSTUDIO_FILES[0]]
    r = run_suite(tmp_path, names, "--collect-only")
    files = [line.split("::")[0].rsplit("/", 1)[-1] for line in r.stdout.splitlines() if "::" in line]
    assert len(files) == 4 * len(names)
    runs = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]  # each file once: in one piece
    assert COSTLIEST_FIRST.index("labelstudio") > 1
    assert runs == [COSTLIEST_FIRST[1], *sorted(LABELSTUDIO_FILES[:2]), "test_aaa.py", "test_zzz.py"], runs
