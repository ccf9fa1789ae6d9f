package dev.keybroker.client;

import io.grpc.Status;

/** The daemon could not be reached in time; status {@code UNAVAILABLE} or {@code DEADLINE_EXCEEDED}. */
public class BrokerUnavailableException extends KeybrokerException {
  private static final long serialVersionUID = 1L;

  public BrokerUnavailableException(String message, Status.Code code, String reason, String requestId,
      Throwable cause) {
    super(message, code, reason, requestId, cause);
  }
}
