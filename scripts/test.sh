#!/usr/bin/env bash
# Set up (once) and run the whole test suite: bash scripts/test.sh [pytest args]
# Two passes: every test but the `serial` ones on pytest-xdist workers (one per core, at most 4: most of the
# suite's time is single-threaded process start-up, imports and servers), then the `serial` tests alone, since
# they measure the machine's load. TEST_WORKERS=1 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
source scripts/setup.sh
bash scripts/browser.sh >/dev/null
bash scripts/labelstudio.sh >/dev/null
echo "scripts/test.sh: set-up took $(( $(date +%s) - start )) s (.venv, chromium, Label Studio's .ls-venv)" >&2
cores=$("$VENV/bin/python" -c "import os; print(len(os.sched_getaffinity(0)))")
workers=${TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
if [ "$workers" -le 1 ]; then
  exec "$VENV/bin/python" -m pytest tests "$@"
fi
# tests/conftest.py gives each worker (and the subprocesses its tests start) its share of the cores.
rc=0
"$VENV/bin/python" -m pytest tests -n "$workers" --dist loadgroup -m "not serial" "$@" || rc=$?
serial=0
"$VENV/bin/python" -m pytest tests -m serial "$@" || serial=$?
[ "$serial" -eq 5 ] && serial=0  # 5: no serial test among those asked for
[ "$rc" -ne 0 ] && exit "$rc"
exit "$serial"
