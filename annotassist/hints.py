"""The command a user can type to run annotassist again, exactly as they are set up.

A newcomer who ran `bash scripts/demo.sh` has `.venv/bin/annotassist`, not `annotassist`, on hand: a hint
that says `annotassist ui ...` would fail for them. Hints therefore name the program the way it was started.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def _short(path: str) -> str:
    """A path relative to the current folder when it lies inside it (what the user typed, usually)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def command() -> str:
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "annotassist":
        found = shutil.which("annotassist")
        if found and Path(found).resolve() == Path(argv0).resolve():
            return "annotassist"
        path = _short(str(Path(argv0).absolute()))
        return path if "/" in path else f"./{path}"
    # python -m annotassist (or a test harness): the same interpreter, as a module
    return f"{_short(sys.executable)} -m annotassist"
