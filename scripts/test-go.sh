#!/usr/bin/env bash
# Run the Go client's tests (clients/go) against a real dev daemon from .venv.
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

cd "$root/clients/go"
exec go test ./... -count=1 "$@"
