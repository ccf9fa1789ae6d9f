package dev.keybroker.examples;

import dev.keybroker.client.DecryptionException;
import dev.keybroker.client.KeybrokerClient;
import dev.keybroker.client.VerificationException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;

/**
 * Encrypts with a context, signs, MACs and draws a token against a running keybroker daemon.
 * The socket is the first argument, else KEYBROKER_SOCKET, else the default search order.
 */
public final class Quickstart {
  private Quickstart() {}

  public static void main(String[] args) {
    Path socket = args.length > 0 ? Path.of(args[0]) : null;
    try (KeybrokerClient client = KeybrokerClient.connect(socket)) {
      byte[] card = "4111 1111 1111 1111".getBytes(StandardCharsets.UTF_8);
      Map<String, String> acme = Map.of("tenant", "acme");

      byte[] envelope = client.encrypt(card, "default", acme);
      byte[] opened = client.decrypt(envelope, acme);
      System.out.println("decrypted: " + new String(opened, StandardCharsets.UTF_8));

      try {
        client.decrypt(envelope, Map.of("tenant", "globex"));
      } catch (DecryptionException e) {
        System.out.println("wrong context refused: " + e.reason());
      }

      byte[] invoice = "invoice 42: EUR 100".getBytes(StandardCharsets.UTF_8);
      byte[] signature = client.sign(invoice, "signing");
      client.verify(invoice, signature, "signing"); // returns normally: valid
      System.out.println("signature verified (" + signature.length + " bytes DER)");
      try {
        client.verify("invoice 42: EUR 900".getBytes(StandardCharsets.UTF_8), signature,
            "signing");
      } catch (VerificationException e) {
        System.out.println("tampered invoice refused: " + e.reason());
      }

      byte[] mac = client.hmac("amount=100&to=acme".getBytes(StandardCharsets.UTF_8), "hmac");
      System.out.println("hmac: " + mac.length + " bytes");
      System.out.println("token: " + client.token());
    }
  }
}
