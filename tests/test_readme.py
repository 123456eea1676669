"""The README cannot drift from the CLI: every `annotassist ...` command line it shows parses with the real
argument parser (verb and every option exist, values have the right type), every script and benchmark it
names exists, and every config/profile it names is in configs/."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from annotassist.cli import build_parser
from annotassist.config import load_config

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def shell_lines(text: str) -> list[str]:
    """The command lines of the README's ```bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                out.append(line)
    return out


def annotassist_commands(text: str) -> list[list[str]]:
    cmds = []
    for line in shell_lines(text):
        words = shlex.split(line)
        while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
            words = words[1:]
        if words and Path(words[0]).name == "annotassist":
            cmds.append(words[1:])
    return cmds


def test_the_readme_shows_commands():
    cmds = annotassist_commands(README)
    verbs = {c[0] for c in cmds if c}
    assert len(cmds) >= 15 and {"loop", "init", "export", "ui", "report", "simulate"} <= verbs, sorted(verbs)


@pytest.mark.parametrize("words", annotassist_commands(README), ids=lambda w: " ".join(w)[:60])
def test_every_readme_command_parses(words, capsys):
    parser = build_parser(full_help=True)
    try:
        args = parser.parse_args(words)
    except SystemExit as e:
        pytest.fail(f"`annotassist {' '.join(words)}` does not parse: {capsys.readouterr().err.strip()} ({e})")
    for name in ("project", "config"):
        value = getattr(args, name, None)
        if value and not value.startswith("runs/") and "/" not in value:
            assert (REPO / "configs" / f"{value}.yaml").is_file(), f"config {value} is not in configs/"
        elif value and value.startswith("configs/"):
            assert (REPO / value).is_file(), value
    profile = getattr(args, "profile", None)
    config = getattr(args, "config", None) or getattr(args, "project", None)
    if profile and profile != "none" and config and not str(config).startswith("runs/"):
        path = REPO / (config if config.endswith(".yaml") else f"configs/{config}.yaml")
        load_config(path, profile=profile)  # raises, naming the profile, when it does not exist


def test_every_script_and_benchmark_it_names_exists():
    named = set(re.findall(r"(?:scripts|benchmarks|configs|apps)/[\w./-]+\.(?:sh|py|yaml)", README))
    missing = [p for p in sorted(named) if not (REPO / p).is_file()]
    assert not missing, missing
    assert len(named) >= 8, named
