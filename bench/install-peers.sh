#!/usr/bin/env bash
# Installs the tools Orion is compared with (ccache, sccache, distcc) and GNU time, with apt.
# Never fails the benchmark: writes one line per peer to STATUS_FILE (default bench/work/peers.status)
#   <name> ok <version>        installed and runnable
#   <name> missing <reason>    could not be installed; the benchmark reports it as such
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
STATUS_FILE=${1:-$HERE/work/peers.status}
mkdir -p "$(dirname "$STATUS_FILE")"
: >"$STATUS_FILE"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# package:binary pairs
PEERS="ccache:ccache sccache:sccache distcc:distcc time:/usr/bin/time"
need=()
for pair in $PEERS; do
  pkg=${pair%%:*}; bin=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done

log=$(mktemp)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]} with apt" >&2
  # One package at a time, so one that cannot be installed does not keep the others out.
  # Another apt run (other jobs on the machine) holds the dpkg lock for a while: wait for it.
  APT=(timeout 900 $SUDO apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  updated=0
  for pkg in "${need[@]}"; do
    if ! "${APT[@]}" install "$pkg" >"$log.$pkg" 2>&1; then
      if [ $updated -eq 0 ]; then
        timeout 600 $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
        updated=1
      fi
      "${APT[@]}" install "$pkg" >"$log.$pkg" 2>&1
    fi
  done
fi

for pair in $PEERS; do
  pkg=${pair%%:*}; bin=${pair#*:}
  if command -v "$bin" >/dev/null 2>&1; then
    case $pkg in
      ccache) v=$(ccache --version 2>/dev/null | head -1) ;;
      sccache) v=$(sccache --version 2>/dev/null | head -1) ;;
      distcc) v=$(distcc --version 2>/dev/null | head -1)
              command -v distccd >/dev/null 2>&1 || { echo "distcc missing distccd not found after installing distcc" >>"$STATUS_FILE"; continue; } ;;
      time) v="GNU time $(dpkg-query -W -f='${Version}' time 2>/dev/null)" ;;
    esac
    echo "$pkg ok ${v:-unknown version}" >>"$STATUS_FILE"
  else
    reason=$(grep -E "^E: " "$log.$pkg" 2>/dev/null | head -1)
    [ -n "$reason" ] || reason=$(tail -1 "$log.$pkg" 2>/dev/null)
    echo "$pkg missing ${reason:-apt-get could not install it}" >>"$STATUS_FILE"
  fi
done
rm -f "$log" "$log".*
cat "$STATUS_FILE" >&2
