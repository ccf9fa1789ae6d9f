package dev.keybroker.client;

import io.grpc.Status;

/** The caller may not use the key or operation; status {@code PERMISSION_DENIED} or {@code UNAUTHENTICATED}. */
public class PermissionDeniedException extends KeybrokerException {
  private static final long serialVersionUID = 1L;

  public PermissionDeniedException(String message, Status.Code code, String reason, String requestId,
      Throwable cause) {
    super(message, code, reason, requestId, cause);
  }
}
