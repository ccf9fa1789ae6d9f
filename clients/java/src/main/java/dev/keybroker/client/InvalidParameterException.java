package dev.keybroker.client;

import io.grpc.Status;

/** The request was refused as invalid; reason or status {@code INVALID_ARGUMENT}. */
public class InvalidParameterException extends KeybrokerException {
  private static final long serialVersionUID = 1L;

  public InvalidParameterException(String message, Status.Code code, String reason, String requestId,
      Throwable cause) {
    super(message, code, reason, requestId, cause);
  }
}
