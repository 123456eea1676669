#!/usr/bin/env bash
# A real browser for the UI tests: Debian's chromium (never `playwright install`, which downloads a browser
# and fails offline). Playwright's Python package comes with the project's dev extra. Idempotent.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
# the binary itself: Debian's /usr/bin/chromium launcher script trips over its own memory check when asked
# for --version on some machines ("[: ...: unexpected operator")
/usr/lib/chromium/chromium --version 2>/dev/null || dpkg-query -W -f='Chromium ${Version}\n' chromium
