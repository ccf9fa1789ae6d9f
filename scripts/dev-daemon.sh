# Sourced by scripts/test-{go,node,java}.sh: one dev daemon for a client test suite, started
# by the shared launcher (tests/support/daemon.py), with KEYBROKER_SOCKET exported for the tests.
#
#   start_dev_daemon PYTHON    # PYTHON: the interpreter with the daemon installed
#
# The launcher stops the daemon when its standard input closes: the EXIT trap closes it, and so
# does the kernel if this shell dies, so no daemon outlives the script.

start_dev_daemon() {
	local python="$1" repo line
	repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
	coproc KB_LAUNCHER {
		PYTHONPATH="$repo/tests${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m support.daemon --dev
	}
	# bash unsets KB_LAUNCHER and KB_LAUNCHER_PID when the coprocess ends: keep copies for the trap.
	kb_launcher_in="${KB_LAUNCHER[1]}" kb_launcher_out="${KB_LAUNCHER[0]}"
	kb_launcher_pid="$KB_LAUNCHER_PID"
	trap stop_dev_daemon EXIT
	if ! IFS= read -r line <&"$kb_launcher_out" || [[ "$line" != KEYBROKER_SOCKET=?* ]]; then
		echo "error: the dev daemon did not start (its output is above)" >&2
		exit 1
	fi
	export KEYBROKER_SOCKET="${line#KEYBROKER_SOCKET=}"
}

# EXIT trap: close the launcher's stdin, wait for the daemon to stop, keep the script's status
# (or fail it if the daemon did not stop cleanly).
stop_dev_daemon() {
	local status=$? launcher=0
	exec {kb_launcher_in}>&- {kb_launcher_out}<&-
	wait "$kb_launcher_pid" 2>/dev/null || launcher=$?
	if ((status == 0 && launcher != 0 && launcher != 127)); then
		status=1
	fi
	exit "$status"
}
