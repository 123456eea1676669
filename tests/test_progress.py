"""Progress as plain lines when the output is not a terminal (a log file keeps every tqdm redraw)."""
from __future__ import annotations

import io

from annotassist.progress import LineProgress, progress


def test_not_a_terminal_gives_plain_lines_without_carriage_returns():
    out = io.StringIO()
    bar = progress(total=50, desc="train dssn", unit="step", stream=out)
    assert isinstance(bar, LineProgress)
    bar.min_seconds = 0.0  # every 10% here, not every 30 s
    for _ in range(50):
        bar.update(1)
    bar.set_postfix({"loss": "0.512"})
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "train dssn: 0/50 step (0%)"
    assert 10 <= len(lines) <= 12  # start, every 10%, end
    assert "left" in lines[1] and lines[-1].startswith("train dssn: 50/50 step (100%)")
    assert "took" in lines[-1] and "loss=0.512" in lines[-1]


def test_iterating_and_disabled():
    out = io.StringIO()
    assert list(progress(range(3), desc="eval", stream=out)) == [0, 1, 2]
    assert out.getvalue().splitlines()[-1].startswith("eval: 3/3 it (100%)")
    quiet = io.StringIO()
    assert list(progress(range(3), disable=True, stream=quiet)) == [0, 1, 2] and quiet.getvalue() == ""
