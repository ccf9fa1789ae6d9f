#!/usr/bin/env bash
# Run the Go client's tests (clients/go) against one real dev daemon from .venv, started by the
# shared launcher (scripts/dev-daemon.sh) and stopped when this script exits.
# Non-interactive and idempotent; works from any directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v go >/dev/null 2>&1; then
	echo "error: \`go\` not found on PATH; the Go client (clients/go) needs Go 1.26 or newer: https://go.dev/dl/" >&2
	exit 1
fi
if [ ! -x "$root/.venv/bin/python" ]; then
	echo "error: $root/.venv/bin/python is missing; run \`make install\` first (the tests start the daemon from it)" >&2
	exit 1
fi

# shellcheck source=scripts/dev-daemon.sh
source "$root/scripts/dev-daemon.sh"
start_dev_daemon "$root/.venv/bin/python"

cd "$root/clients/go"
go test ./... -count=1 "$@"
