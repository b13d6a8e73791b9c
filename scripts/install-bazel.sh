#!/usr/bin/env bash
# Installs Bazel (Debian's bazel-bootstrap plus the Java rules it needs) for the
# Bazel interoperability test (test/integration/bazel.test.ts). Idempotent.
set -euo pipefail
need=()
command -v bazel >/dev/null || need+=(bazel-bootstrap)
[ -d /usr/share/bazel/rules/java ] || need+=(bazel-rules-java)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "orion: installing Bazel: ${need[*]}" >&2
  # Install straight away when the package lists already know the packages; refresh them first otherwise.
  if ! apt-cache show "${need[@]}" >/dev/null 2>&1; then
    $SUDO apt-get update -qq
  fi
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
command -v bazel >/dev/null || { echo "orion: bazel is still missing after installing ${need[*]:-nothing}" >&2; exit 1; }
