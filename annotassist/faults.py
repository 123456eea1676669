"""Fault injection for the crash tests.

`ANNOTASSIST_KILL_AT=<point>[:<n>]` makes this process SIGKILL itself the n-th time (default 1st) it passes
`point(<point>)`: a real kill with no clean-up, at a place a test can name (the middle of training, of scoring,
of a push or of a pull), where a kill from outside would land at a random moment. Unset, it costs one dict
lookup.
"""
from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("ANNOTASSIST_KILL_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
