#!/usr/bin/env bash
# Set up (once) and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
bash scripts/browser.sh >/dev/null
bash scripts/labelstudio.sh >/dev/null
exec "$VENV/bin/python" -m pytest tests "$@"
