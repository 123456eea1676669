# Sourced by demo.sh and test.sh: a virtual environment with annotassist and its test tools.
# torch comes from PyPI (its default build runs on CPU and on CUDA GPUs alike); scripts/pip_install.sh installs
# with uv where it can (about twice as fast as pip) and with pip otherwise.
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import annotassist, pytest, torch, torchvision, timm" 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo "scripts/setup.sh: installing annotassist, torch and the test tools into $VENV (about a minute; ~6 GB)" >&2
  setup_start=$(date +%s)
  bash scripts/pip_install.sh "$VENV" -e ".[dev]"
  touch "$VENV/.installed"
  echo "scripts/setup.sh: $VENV ready in $(( $(date +%s) - setup_start )) s" >&2
fi
