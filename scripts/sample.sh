#!/usr/bin/env bash
# The main job on a sample project: builds fixtures/make-project with orion in a scratch copy,
# twice (the second build is served from the cache), and runs the result.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/orion-sample-XXXXXX)
cache=$(mktemp -d /tmp/orion-sample-cache-XXXXXX)
trap 'rm -rf "$work" "$cache"' EXIT
cp -r "$here/fixtures/make-project/." "$work/"
cd "$work"
echo "== orion build (cold cache) in $work"
node "$here/dist/orion.mjs" build --cache-dir "$cache"
echo "== orion build again (everything cached)"
node "$here/dist/orion.mjs" build --cache-dir "$cache"
echo "== ./hello"
./hello
