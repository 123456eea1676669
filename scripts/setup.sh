# Sourced by demo.sh and test.sh: a virtual environment with annotassist and its test tools.
# torch comes from PyPI (its default build runs on CPU and on CUDA GPUs alike); scripts/pip_install.sh installs
# with uv where it can (about 4x faster than pip) and with pip otherwise.
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import annotassist, pytest, torch, torchvision, timm" 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.installed" ]; then
  bash scripts/pip_install.sh "$VENV" -e ".[dev]"
  touch "$VENV/.installed"
fi
