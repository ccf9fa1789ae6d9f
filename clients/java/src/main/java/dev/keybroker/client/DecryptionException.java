package dev.keybroker.client;

import io.grpc.Status;

/** An envelope could not be decrypted (wrong context, wrong key, corrupt or tampered data); reason {@code DECRYPTION_FAILED}. */
public class DecryptionException extends KeybrokerException {
  private static final long serialVersionUID = 1L;

  public DecryptionException(String message, Status.Code code, String reason, String requestId,
      Throwable cause) {
    super(message, code, reason, requestId, cause);
  }
}
