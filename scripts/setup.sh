# Sourced by demo.sh and test.sh: a virtual environment with annotassist and its test tools.
# torch comes from PyPI (its default build runs on CPU and on CUDA GPUs alike).
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import annotassist, pytest, torch, torchvision, timm" 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.installed" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$VENV/.installed"
fi
