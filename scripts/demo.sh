#!/usr/bin/env bash
# Set up (once) and run the demo: bash scripts/demo.sh [annotassist demo args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec "$VENV/bin/annotassist" demo "$@"
