#!/usr/bin/env bash
# Install the pinned ghz (a Go gRPC load generator) into bench/.bin/ from the Go module proxy.
# Idempotent: does nothing when that version is already there. bench/run.py calls it.
set -euo pipefail

GHZ_VERSION="v0.121.0"
BIN="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.bin"
STAMP="$BIN/ghz.version"

if [[ -x "$BIN/ghz" && -f "$STAMP" && "$(cat "$STAMP")" == "$GHZ_VERSION" ]]; then
  echo "ghz $GHZ_VERSION already in $BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "ghz.sh: the go command is not on PATH; install Go 1.23+ to build ghz" >&2
  exit 1
fi
mkdir -p "$BIN"
GOBIN="$BIN" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
echo "$GHZ_VERSION" >"$STAMP"
echo "ghz $GHZ_VERSION installed in $BIN"
