#!/usr/bin/env bash
# Install SoftHSM2 (the PKCS#11 token the HSM backend's tests run against) from Debian's packages.
# Idempotent and non-interactive: does nothing when softhsm2-util is already on PATH.
set -euo pipefail

if command -v softhsm2-util >/dev/null 2>&1; then
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-softhsm.sh: softhsm2 is missing; run as root or install sudo" >&2
    exit 1
  fi
  SUDO=(sudo)
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-softhsm.sh: no apt-get; install the softhsm2 package with your system's tools" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends softhsm2 >/dev/null
softhsm2-util --version
