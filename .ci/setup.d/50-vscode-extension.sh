#!/usr/bin/env bash
# Build the VS Code extension: type-check + unit tests (`npm test`), then the .vsix that
# tests/editors/test_vscode_e2e.py installs into code-server. Offline once npm's registry has served
# the locked dependencies; vsce 3.9.x runs on the system Node 20.
set -euo pipefail
cd "$(dirname "$0")/../../editors/vscode"
npm ci --no-audit --no-fund --silent
npm test --silent
npm run --silent package
ls -l codellama-lsp.vsix
