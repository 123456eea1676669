#!/usr/bin/env bash
# Install packages into a virtual environment, fast: bash scripts/pip_install.sh VENV PIP-INSTALL-ARGS...
# Used by setup.sh (the project's .venv) and labelstudio.sh (.ls-venv).
#
# uv (a PyPI package) installs what pip would in a fraction of the time: it downloads and unpacks wheels in
# parallel where pip does one at a time (the project's ~6 GB of torch and CUDA wheels, .pyc included: ~45 s
# against ~85 s on 2 cores; Label Studio's venv ~25 s against ~40 s). uv does not read pip's configuration,
# so the index, find-links and constraints pip is set up with here (environment or pip.conf: a mirror, a
# local wheel folder, a version cap) are handed to it as flags. If uv cannot be installed or fails, pip does
# the install as before. ANNOTASSIST_PIP=pip forces pip.
set -euo pipefail
venv=$1; shift
py="$venv/bin/python"

pip_config=""  # set by with_uv, once (pip_setting runs in $(...) subshells, which could not keep it)
pip_setting() {  # the value pip would use for KEY: its environment variable first, then its config files
  local var="PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  # `pip config list` prints the merged files as global.key='value' (`pip config get` reads one file only)
  echo "$pip_config" | sed -n "s/^global\.$1='\(.*\)'\$/\1/p" | tail -1
}

with_uv() {
  # a uv already on PATH (installed for the user, or the project's .venv/bin) saves bootstrapping one
  local uv; uv=$(command -v uv || true)
  if [ -z "$uv" ]; then
    "$py" -m pip install -q uv >/dev/null 2>&1 || return 1
    uv="$venv/bin/uv"
  fi
  pip_config=$("$py" -m pip config list 2>/dev/null || true)
  local flags=(--python "$py" --index-strategy unsafe-best-match) url
  local index; index=$(pip_setting index-url)
  [ -n "$index" ] && flags+=(--index-url "$index")
  # pip skips a file:// index or wheel folder that does not exist (with a warning); uv stops, so drop those
  for url in $(pip_setting extra-index-url); do
    if [[ "$url" != file://* || -d "${url#file://}" ]]; then flags+=(--extra-index-url "$url"); fi
  done
  for url in $(pip_setting find-links); do
    if [[ "$url" == http* || -d "${url#file://}" ]]; then flags+=(--find-links "$url"); fi
  done
  for url in $(pip_setting constraint); do flags+=(--constraint "$url"); done
  local cert; cert=$(pip_setting cert)
  if [ -n "$cert" ]; then export SSL_CERT_FILE="$cert"; fi
  # --compile-bytecode: pip writes every .pyc at install and uv does not; where PYTHONDONTWRITEBYTECODE is set
  # (as on these machines) every process would then compile torch's sources again: test suite 7.5 -> 13.4 min
  "$uv" pip install -q --compile-bytecode "${flags[@]}" "$@"
}

if [ "${ANNOTASSIST_PIP:-uv}" != pip ] && with_uv "$@"; then
  exit 0
fi
[ "${ANNOTASSIST_PIP:-uv}" != pip ] && echo "scripts/pip_install.sh: uv was not usable here; installing with pip (slower)" >&2
"$py" -m pip install -q --upgrade pip || true  # a newer pip is welcome, not needed
"$py" -m pip install -q "$@"
