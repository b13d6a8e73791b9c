#!/usr/bin/env bash
# Fetches Redis 7.0.15's source from Debian's source package into DEST (default bench/work/redis-src).
# Enables deb-src for the machine's Debian suites if needed. Never commits the code.
set -euo pipefail
DEST=${1:-$(dirname "$0")/../bench/work/redis-src}
VERSION=7.0.15
if [ -f "$DEST/src/server.c" ]; then echo "$DEST"; exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  $SUDO tee /etc/apt/sources.list.d/orion-deb-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename ${codename}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: ${codename}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO apt-get update -qq >&2
fi
command -v dpkg-source >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dpkg-dev >&2
work=$(mktemp -d)
( cd "$work" && apt-get source -qq "redis=5:${VERSION}*" >&2 || apt-get source -qq redis >&2 )
src=$(find "$work" -maxdepth 1 -type d -name 'redis-*' | head -1)
[ -n "$src" ] && [ -f "$src/src/server.c" ] || { echo "orion: could not fetch Redis's Debian source package" >&2; exit 1; }
grep -q "\"$VERSION\"" "$src/src/version.h" || echo "orion: warning: fetched $(grep REDIS_VERSION "$src/src/version.h")" >&2
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$src" "$DEST"
rm -rf "$work"
echo "$DEST"
