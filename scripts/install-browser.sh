#!/usr/bin/env bash
# Installs the browser the dashboard test drives headless (Debian's chromium, used by playwright-core).
# Idempotent. The dashboard test fails with a message naming this script when chromium is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "orion: installing chromium (dashboard browser test)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
