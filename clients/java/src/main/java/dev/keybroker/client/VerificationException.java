package dev.keybroker.client;

import io.grpc.Status;

/** A check failed: signature, MAC, password or digest; reason {@code VERIFICATION_FAILED}. */
public class VerificationException extends KeybrokerException {
  private static final long serialVersionUID = 1L;

  public VerificationException(String message, Status.Code code, String reason, String requestId,
      Throwable cause) {
    super(message, code, reason, requestId, cause);
  }
}
