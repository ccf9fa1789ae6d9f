// The dev daemon these tests run against: scripts/test-node.sh starts one for the whole run with
// the shared launcher (tests/support/daemon.py) and exports its socket as KEYBROKER_SOCKET.

/** The dev daemon's socket; throws, naming the harness, when no daemon was started. */
export function daemonSocket() {
  const socket = process.env.KEYBROKER_SOCKET;
  if (!socket) {
    throw new Error('KEYBROKER_SOCKET is not set: run scripts/test-node.sh, which starts a dev daemon for these tests');
  }
  return socket;
}
