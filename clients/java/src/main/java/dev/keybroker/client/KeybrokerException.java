package dev.keybroker.client;

import io.grpc.Status;

/**
 * Base of every exception the keybroker client throws.
 *
 * <p>Carries the gRPC status {@link #code()} (or {@code null} for errors raised by the client
 * itself), the daemon's stable {@link #reason()} word (from the trailing metadata key
 * {@code keybroker-error-reason}, for example {@code DECRYPTION_FAILED}) and the
 * {@link #requestId()} under which the daemon logged the failure. The message is the daemon's
 * status description, which never contains secrets.
 */
public class KeybrokerException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final Status.Code code;
  private final String reason;
  private final String requestId;

  public KeybrokerException(String message, Status.Code code, String reason, String requestId,
      Throwable cause) {
    super(message, cause);
    this.code = code;
    this.reason = reason;
    this.requestId = requestId;
  }

  /** The gRPC status code, or {@code null} when the client itself refused the call. */
  public Status.Code code() {
    return code;
  }

  /** The daemon's stable reason word ({@code DECRYPTION_FAILED}, ...), or {@code null}. */
  public String reason() {
    return reason;
  }

  /** The daemon's request id for this failure, or {@code null}. */
  public String requestId() {
    return requestId;
  }
}
