package dev.keybroker.client;

import io.grpc.Status;

/** The named key does not exist; reason {@code KEY_NOT_FOUND} or status {@code NOT_FOUND}. */
public class KeyNotFoundException extends KeybrokerException {
  private static final long serialVersionUID = 1L;

  public KeyNotFoundException(String message, Status.Code code, String reason, String requestId,
      Throwable cause) {
    super(message, code, reason, requestId, cause);
  }
}
