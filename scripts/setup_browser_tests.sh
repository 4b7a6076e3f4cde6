#!/usr/bin/env bash
# Sets up what the frame service's browser tests (tests/test_serve_node.py) and the real-browser
# benchmark (gpupipe/tools/browser_bench.py) need beyond the Python packages: Debian's Chromium,
# node and npm where missing (apt-get; run as root, or with sudo), then the Node client's dev
# dependencies (`npm ci` in clients/node: puppeteer-core, with PUPPETEER_SKIP_DOWNLOAD=1 so that it
# downloads no browser of its own). Safe to run again. Measured on a fresh machine: ~25 s for
# chromium (113 MB), ~6 s for npm ci (81 packages, 57 MB). .ci/run runs it.
#
#   bash scripts/setup_browser_tests.sh
#
# Without it those tests skip, saying what is missing; E2E_BROWSER_REQUIRED=1 (set by .ci/run)
# turns the skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/apt.sh

command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need_apt chromium
command -v node >/dev/null || need_apt nodejs
command -v npm >/dev/null || need_apt npm
(cd clients/node && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
echo "browser tests ready: $(command -v chromium || command -v chromium-browser), node $(node --version)," \
  "puppeteer-core $(node -p "require('./clients/node/node_modules/puppeteer-core/package.json').version")"
