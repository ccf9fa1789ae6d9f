package dev.keybroker.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.keybroker.examples.Quickstart;
import io.grpc.Status;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Runs the client against the real dev daemon that scripts/test-java.sh started. */
class KeybrokerClientTest {
  private static Path socket;
  private static KeybrokerClient client;

  private static final byte[] CARD = "4111 1111 1111 1111".getBytes(StandardCharsets.UTF_8);
  private static final Map<String, String> ACME = Map.of("tenant", "acme", "table", "cards");

  @BeforeAll
  static void connect() {
    socket = DevDaemon.socket();
    client = KeybrokerClient.connect(socket);
  }

  @AfterAll
  static void disconnect() {
    if (client != null) {
      client.close();
    }
  }

  @Test
  void roundTripWithContext() {
    byte[] envelope = client.encrypt(CARD, "default", ACME);
    assertFalse(new String(envelope, StandardCharsets.ISO_8859_1).contains("4111"));
    assertArrayEquals(CARD, client.decrypt(envelope, ACME));
    // context maps compare by content, not order
    assertArrayEquals(CARD, client.decrypt(envelope, Map.of("table", "cards", "tenant", "acme")));
  }

  @Test
  void roundTripDefaults() {
    assertArrayEquals(CARD, client.decrypt(client.encrypt(CARD)));
    assertArrayEquals(new byte[0], client.decrypt(client.encrypt(new byte[0], null, null)));
  }

  @Test
  void wrongContextIsDecryptionException() {
    byte[] envelope = client.encrypt(CARD, "default", ACME);
    DecryptionException e =
        assertThrows(
            DecryptionException.class,
            () -> client.decrypt(envelope, Map.of("tenant", "globex", "table", "cards")));
    assertEquals("DECRYPTION_FAILED", e.reason());
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
    assertThrows(DecryptionException.class, () -> client.decrypt(envelope));
  }

  @Test
  void tamperedEnvelopeIsDecryptionException() {
    byte[] envelope = client.encrypt(CARD, "default", ACME);
    envelope[envelope.length - 1] ^= 1;
    assertThrows(DecryptionException.class, () -> client.decrypt(envelope, ACME));
  }

  @Test
  void unknownKeyIsKeyNotFoundException() {
    KeyNotFoundException e =
        assertThrows(
            KeyNotFoundException.class, () -> client.encrypt(CARD, "no-such-key", Map.of()));
    assertEquals("KEY_NOT_FOUND", e.reason());
    assertEquals(Status.Code.NOT_FOUND, e.code());
    assertThrows(KeyNotFoundException.class, () -> client.sign(CARD, "no-such-key"));
  }

  @Test
  void signAndVerify() {
    byte[] data = "invoice 42: EUR 100".getBytes(StandardCharsets.UTF_8);
    byte[] signature = client.sign(data, "signing");
    assertDoesNotThrow(() -> client.verify(data, signature, "signing"));
    assertTrue(client.publicKey("signing").startsWith("-----BEGIN PUBLIC KEY-----"));

    byte[] tampered = "invoice 42: EUR 900".getBytes(StandardCharsets.UTF_8);
    VerificationException e =
        assertThrows(
            VerificationException.class, () -> client.verify(tampered, signature, "signing"));
    assertEquals("VERIFICATION_FAILED", e.reason());

    byte[] badSignature = signature.clone();
    badSignature[badSignature.length - 1] ^= 1;
    assertThrows(
        VerificationException.class, () -> client.verify(data, badSignature, "signing"));
  }

  @Test
  void hmacIsDeterministicAndVerifies() {
    byte[] data = "amount=100&to=acme".getBytes(StandardCharsets.UTF_8);
    byte[] mac = client.hmac(data, "hmac");
    assertEquals(32, mac.length);
    assertArrayEquals(mac, client.hmac(data, "hmac"));
    assertDoesNotThrow(() -> client.hmacVerify(data, mac, "hmac"));
    mac[0] ^= 1;
    assertThrows(VerificationException.class, () -> client.hmacVerify(data, mac, "hmac"));
  }

  @Test
  void tokenLengths() {
    assertEquals(43, client.token().length()); // 32 bytes, unpadded url-safe base64
    assertEquals(22, client.token(16).length());
    assertTrue(client.token().matches("[A-Za-z0-9_-]+"));
    assertEquals(48, client.tokenHex(24).length());
    assertEquals(16, client.tokenBytes(16).length);
    assertThrows(InvalidParameterException.class, () -> client.token(0));
    InvalidParameterException e =
        assertThrows(InvalidParameterException.class, () -> client.token(8));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
  }

  @Test
  void missingSocketIsBrokerUnavailable(@TempDir Path dir) {
    Path missing = dir.resolve("nobody-listens.sock");
    try (KeybrokerClient down = KeybrokerClient.connect(missing, Duration.ofSeconds(3))) {
      BrokerUnavailableException e =
          assertThrows(BrokerUnavailableException.class, () -> down.token());
      assertTrue(e.getMessage().contains(missing.toString()), e.getMessage());
      assertTrue(e.getMessage().contains("KEYBROKER_SOCKET"), e.getMessage());
    }
  }

  @Test
  void explicitSocketWinsInResolution() {
    assertEquals(socket, KeybrokerClient.resolveSocket(socket));
    assertNotNull(KeybrokerClient.resolveSocket(null));
  }

  @Test
  void quickstartExampleRuns() {
    PrintStream original = System.out;
    ByteArrayOutputStream captured = new ByteArrayOutputStream();
    System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
    try {
      Quickstart.main(new String[] {socket.toString()});
    } finally {
      System.setOut(original);
    }
    String out = captured.toString(StandardCharsets.UTF_8);
    original.print(out);
    assertTrue(out.contains("decrypted: 4111 1111 1111 1111"), out);
    assertTrue(out.contains("wrong context refused: DECRYPTION_FAILED"), out);
    assertTrue(out.contains("signature verified"), out);
    assertTrue(out.contains("tampered invoice refused: VERIFICATION_FAILED"), out);
    assertTrue(out.matches("(?s).*token: [A-Za-z0-9_-]{43}\\R.*"), out);
  }
}
