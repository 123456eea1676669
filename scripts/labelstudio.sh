#!/usr/bin/env bash
# Label Studio 1.23.2 for the integration tests and for trying the sync locally, in its OWN virtual
# environment: it pins label-studio-sdk==2.1.2 and ~1 GB of Django dependencies that must not mix with the
# project's .venv. Created once, reused when present (idempotent). Prints the venv path.
#   LS_VENV=.ls-venv (default, in the repo root, gitignored)
set -euo pipefail
cd "$(dirname "$0")/.."
LS_VENV=${LS_VENV:-.ls-venv}
LS_VERSION=1.23.2
# sentry-sdk 3.0 no longer knows the `send_default_pii` option Label Studio 1.23.2 passes it at start-up,
# and label-studio asks only for sentry-sdk>=2.16: without the cap a fresh install cannot start the server
PINS=("label-studio==$LS_VERSION" "sentry-sdk>=2.16,<3")
MARK="$LS_VENV/.installed-$LS_VERSION-sentry2"
if [ ! -x "$LS_VENV/bin/label-studio" ] || [ ! -f "$MARK" ]; then
  rm -rf "$LS_VENV/test-data-template"  # the tests' migrated data folder belongs to the install it came from
  log=$(mktemp)
  # pip's output goes to a log shown only on failure, so the test run stays quiet
  if ! { python3 -m venv "$LS_VENV" \
         && bash scripts/pip_install.sh "$LS_VENV" "${PINS[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "scripts/labelstudio.sh: installing label-studio==$LS_VERSION into $LS_VENV failed (log above)" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  touch "$MARK"
fi
echo "$LS_VENV"
