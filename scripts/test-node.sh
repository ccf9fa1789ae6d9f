#!/usr/bin/env bash
# Build and test the Node.js client (clients/node) against one real dev daemon, started by the
# shared launcher (scripts/dev-daemon.sh) and stopped when this script exits.
# Non-interactive and idempotent; runs from any directory. Needs node >= 20, npm, and the
# daemon installed in .venv (`make install`); KEYBROKER_PYTHON overrides the interpreter.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "test-node.sh: '$tool' not found; install Node.js >= 20 (with npm)" >&2
    exit 1
  fi
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "test-node.sh: Node.js >= 20 required, found $(node --version)" >&2
  exit 1
fi
python="${KEYBROKER_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$python" ]; then
  echo "test-node.sh: $python not found; run 'make install' first (or set KEYBROKER_PYTHON)" >&2
  exit 1
fi

cd "$ROOT/clients/node"
export npm_config_yes=true npm_config_update_notifier=false
npm ci --no-audit --no-fund

# shellcheck source=scripts/dev-daemon.sh
source "$ROOT/scripts/dev-daemon.sh"
start_dev_daemon "$python"
npm test
