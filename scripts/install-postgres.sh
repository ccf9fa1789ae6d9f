#!/usr/bin/env bash
# Install PostgreSQL (the server the postgres key store's tests run throwaway clusters of) from
# Debian's packages. Idempotent and non-interactive: does nothing when initdb is already on PATH
# or under /usr/lib/postgresql/*/bin (where Debian puts it, off PATH).
set -euo pipefail

if command -v initdb >/dev/null 2>&1; then
  exit 0
fi
for candidate in /usr/lib/postgresql/*/bin/initdb; do
  if [ -x "$candidate" ]; then
    exit 0
  fi
done

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-postgres.sh: PostgreSQL is missing; run as root or install sudo" >&2
    exit 1
  fi
  SUDO=(sudo)
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres.sh: no apt-get; install the postgresql package with your system's tools" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# The tests make throwaway clusters of their own: keep the package from creating and starting
# a system cluster (the official postgres image does the same).
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
"${SUDO[@]}" sed -ri 's/^#?\s*(create_main_cluster)\s*=.*$/\1 = false/' \
  /etc/postgresql-common/createcluster.conf
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql >/dev/null
ls -d /usr/lib/postgresql/*/bin/initdb
