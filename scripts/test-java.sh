#!/usr/bin/env bash
# Builds the Java client (clients/java; code generated from proto/ at build time) and runs its
# JUnit tests against one real dev daemon from <repo>/.venv, started by the shared launcher
# (scripts/dev-daemon.sh) and stopped when this script exits. Non-interactive, idempotent,
# runs from any directory.
#
# Environment:
#   MAVEN_REPO_LOCAL  Maven's local repository (default: ~/.m2/repository)
#   KEYBROKER_PYTHON  interpreter with the daemon installed (default: <repo>/.venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "test-java: '$tool' not found on PATH (need a JDK >= 17 and Maven >= 3.8)" >&2
    exit 2
  fi
done
java_major="$(java -XshowSettings:properties -version 2>&1 \
  | sed -n 's/^ *java.specification.version = \([0-9.]*\).*/\1/p' | head -n1)"
if [[ -z "$java_major" || "${java_major%%.*}" -lt 17 ]]; then
  echo "test-java: need Java >= 17, found '${java_major:-unknown}'" >&2
  exit 2
fi
python="${KEYBROKER_PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
  echo "test-java: $python not found; create the venv with the daemon installed first" >&2
  exit 2
fi

# shellcheck source=scripts/dev-daemon.sh
source "$ROOT/scripts/dev-daemon.sh"
start_dev_daemon "$python"

repo_local="${MAVEN_REPO_LOCAL:-$HOME/.m2/repository}"
cd "$ROOT/clients/java"
rm -rf target/surefire-reports

status=0
# Debian's Maven 3.8.7 writes bare ANSI resets even in batch mode; strip them so that the
# summary line below stands alone on its line.
mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$repo_local" test 2>&1 \
  | sed -e 's/\x1b\[[0-9;]*m//g' || status=$?

# Maven -q prints nothing on success; print one summary line from Surefire's reports.
shopt -s nullglob
reports=(target/surefire-reports/TEST-*.xml)
if ((${#reports[@]})); then
  grep -h '^<testsuite ' "${reports[@]}" \
    | awk '{
        match($0, /tests="[0-9]+"/);    t += substr($0, RSTART + 7, RLENGTH - 8)
        match($0, /failures="[0-9]+"/); f += substr($0, RSTART + 10, RLENGTH - 11)
        match($0, /errors="[0-9]+"/);   e += substr($0, RSTART + 8, RLENGTH - 9)
        match($0, /skipped="[0-9]+"/);  s += substr($0, RSTART + 9, RLENGTH - 10)
      } END { printf "java: %d passed, %d failed, %d skipped\n", t - f - e - s, f + e, s }'
elif ((status == 0)); then
  echo "test-java: no Surefire reports were written" >&2
  status=1
fi
exit "$status"
