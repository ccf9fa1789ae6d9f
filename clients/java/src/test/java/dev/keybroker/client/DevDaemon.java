package dev.keybroker.client;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real dev daemon for the tests: {@code <repo>/.venv/bin/python -m broker serve --dev
 * --state-dir <tmp>}, ready once its socket answers a call; stopped with SIGTERM.
 */
final class DevDaemon implements AutoCloseable {
  private static final Duration START_TIMEOUT = Duration.ofSeconds(60);

  final Path stateDir;
  final Path socket;
  private final Path log;
  private final Process process;

  private DevDaemon(Path stateDir, Process process) {
    this.stateDir = stateDir;
    this.socket = stateDir.resolve("keybroker.sock");
    this.log = stateDir.resolve("daemon.log");
    this.process = process;
  }

  static Path repoRoot() {
    String root = System.getProperty("keybroker.repoRoot");
    if (root == null) {
      throw new IllegalStateException("system property keybroker.repoRoot is not set (run via mvn)");
    }
    return Path.of(root).toAbsolutePath().normalize();
  }

  static DevDaemon start() throws IOException, InterruptedException {
    Path root = repoRoot();
    String python = System.getenv("KEYBROKER_PYTHON");
    Path interpreter = python != null ? Path.of(python) : root.resolve(".venv/bin/python");
    if (!Files.isExecutable(interpreter)) {
      throw new IllegalStateException(
          interpreter + " not found: create the repo's venv with the daemon installed");
    }
    // Short path: a Unix socket path must fit in 108 bytes.
    Path stateDir = Files.createTempDirectory(Path.of("/tmp"), "kbjava");
    Path log = stateDir.resolve("daemon.log");
    ProcessBuilder pb =
        new ProcessBuilder(
                List.of(interpreter.toString(), "-m", "broker", "serve", "--dev", "--state-dir",
                    stateDir.toString()))
            .directory(root.toFile())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile());
    pb.environment().remove("KEYBROKER_SOCKET");
    DevDaemon daemon = new DevDaemon(stateDir, pb.start());
    try {
      daemon.awaitReady();
    } catch (RuntimeException | InterruptedException e) {
      daemon.close();
      throw e;
    }
    return daemon;
  }

  private void awaitReady() throws InterruptedException {
    long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
    RuntimeException last = null;
    while (System.nanoTime() < deadline) {
      if (!process.isAlive()) {
        throw new IllegalStateException(
            "daemon exited with " + process.exitValue() + ":\n" + logText());
      }
      if (Files.exists(socket)) {
        try (KeybrokerClient client = KeybrokerClient.connect(socket, Duration.ofSeconds(2))) {
          client.token(16);
          return;
        } catch (KeybrokerException e) {
          last = e;
        }
      }
      Thread.sleep(100);
    }
    throw new IllegalStateException(
        "daemon not ready after " + START_TIMEOUT + " (" + last + "):\n" + logText(), last);
  }

  String logText() {
    try {
      return Files.readString(log, StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "(no log: " + e + ")";
    }
  }

  @Override
  public void close() throws InterruptedException {
    process.destroy(); // SIGTERM
    if (!process.waitFor(10, TimeUnit.SECONDS)) {
      process.destroyForcibly();
      process.waitFor(5, TimeUnit.SECONDS);
    }
    try (Stream<Path> paths = Files.walk(stateDir)) {
      paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException ignored) {
      // best effort
    }
  }
}
