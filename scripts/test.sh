#!/usr/bin/env bash
# Set up (once) and run the whole test suite: bash scripts/test.sh [pytest args]
# Two passes: every test but the `serial` ones on pytest-xdist workers (one per core, at most 4: most of the
# suite's time is single-threaded process start-up, imports and servers), then the `serial` tests alone, since
# they measure the machine's load. TEST_WORKERS=1 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# Label Studio's venv installs beside the project's (its own venv, its own packages; uv's cache takes
# concurrent installs): one install mostly waits on the disk and the index while the other compiles
bash scripts/labelstudio.sh >/dev/null &
ls_setup=$!
source scripts/setup.sh
bash scripts/browser.sh >/dev/null
wait "$ls_setup"
# Label Studio starts once to run its database migrations (~30 s of one core) and keeps the migrated data
# folder as the template every test server starts from; it runs beside the first tests (a test that needs the
# server waits for it). If it fails, the test server's own first start migrates and says what went wrong.
"${LS_VENV:-.ls-venv}/bin/python" tests/labelstudio_server.py --template 2>/dev/null &
echo "scripts/test.sh: set-up took $(( $(date +%s) - start )) s (.venv, chromium, Label Studio's .ls-venv)" >&2
cores=$("$VENV/bin/python" -c "import os; print(len(os.sched_getaffinity(0)))")
workers=${TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
if [ "$workers" -le 1 ]; then
  exec "$VENV/bin/python" -m pytest tests "$@"
fi
# tests/conftest.py gives each worker (and the subprocesses its tests start) its share of the cores.
# --no-loadscope-reorder: the groups go out in the order tests/conftest.py gives them (the costliest first, so
# no long group starts last while the other worker idles), not by their number of tests
rc=0
"$VENV/bin/python" -m pytest tests -n "$workers" --dist loadgroup --no-loadscope-reorder -m "not serial" "$@" \
  || rc=$?
# The serial pass collects only the files that mark a test serial (collecting all of tests/ imports every test
# module: ~6 s), unless the caller named tests of their own
serial_paths=(tests)
named=0
for a in "$@"; do [[ "$a" == -* ]] || named=1; done
if [ "$named" -eq 0 ]; then
  mapfile -t serial_paths < <(grep -l "mark.serial" tests/test_*.py)
fi
serial=0
if [ "${#serial_paths[@]}" -gt 0 ]; then
  "$VENV/bin/python" -m pytest "${serial_paths[@]}" -m serial "$@" || serial=$?
fi
[ "$serial" -eq 5 ] && serial=0  # 5: no serial test among those asked for
[ "$rc" -ne 0 ] && exit "$rc"
exit "$serial"
