"""scripts/pip_install.sh, which setup.sh and labelstudio.sh install with: uv must get pip's settings.

A real venv, real installers and two real wheels of a tiny package (1.0 and 2.0) in a local folder. pip is
told, the way a machine's pip.conf or environment tells it, to look only there (an empty index), to skip an
index that does not exist, and to stay at or below 1.0. If the script did not hand those settings to uv, uv
would find nothing to install, or the newest version.
"""
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def write_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel of `tinypkg` whose module says its version."""
    files = {
        "tinypkg/__init__.py": f'VERSION = "{version}"\n',
        f"tinypkg-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n",
        f"tinypkg-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = f"tinypkg-{version}.dist-info/RECORD"
    lines = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(text.encode())}")
    lines.append(f"{record},,")
    path = folder / f"tinypkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(record, "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_pip_install_hands_pips_index_links_and_constraints_to_uv(tmp_path, installer):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "1.0")
    write_wheel(wheels, "2.0")
    index = tmp_path / "index"  # an index with nothing in it: only the wheel folder can serve tinypkg
    index.mkdir()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("tinypkg<=1.0\n")
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "ANNOTASSIST_PIP"))}
    env.update(
        PIP_INDEX_URL=f"file://{index}",
        PIP_EXTRA_INDEX_URL=f"file://{tmp_path / 'no-such-index'}",  # pip warns and goes on; uv must too
        PIP_FIND_LINKS=str(wheels),
        PIP_CONSTRAINT=str(constraints),
        PIP_CONFIG_FILE=os.devnull,
        # the project's .venv/bin holds a uv when setup.sh used one; nothing can be downloaded here
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    if installer == "pip":
        env["ANNOTASSIST_PIP"] = "pip"
    proc = subprocess.run(["bash", str(REPO / "scripts/pip_install.sh"), str(target), "tinypkg"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    version = subprocess.run([str(target / "bin/python"), "-c", "import tinypkg; print(tinypkg.VERSION)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "1.0", f"the constraint was not applied: tinypkg {version}\n{proc.stderr}"
    fell_back = "uv was not usable" in proc.stderr
    if installer == "uv" and shutil.which("uv", path=env["PATH"]):
        assert not fell_back, proc.stderr
    if installer == "pip":
        assert not fell_back  # asked for pip: no complaint about uv
