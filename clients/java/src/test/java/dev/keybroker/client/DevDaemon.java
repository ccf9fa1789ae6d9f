package dev.keybroker.client;

import java.nio.file.Path;

/**
 * The dev daemon these tests run against: {@code scripts/test-java.sh} starts one for the whole
 * run with the shared launcher ({@code tests/support/daemon.py}) and exports its socket as
 * {@code KEYBROKER_SOCKET}.
 */
final class DevDaemon {
  private DevDaemon() {}

  /** The dev daemon's socket; fails, naming the harness, when no daemon was started. */
  static Path socket() {
    String socket = System.getenv("KEYBROKER_SOCKET");
    if (socket == null || socket.isBlank()) {
      throw new IllegalStateException(
          "KEYBROKER_SOCKET is not set: run scripts/test-java.sh, which starts a dev daemon for"
              + " these tests");
    }
    return Path.of(socket);
  }
}
