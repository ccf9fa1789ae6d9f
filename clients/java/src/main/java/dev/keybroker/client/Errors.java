package dev.keybroker.client;

import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import keybroker.v1.Common.ErrorReason;

/** The one place that maps a gRPC failure to a keybroker exception: reason first, then code. */
final class Errors {
  static final Metadata.Key<String> REASON_KEY =
      Metadata.Key.of("keybroker-error-reason", Metadata.ASCII_STRING_MARSHALLER);
  static final Metadata.Key<String> REQUEST_ID_KEY =
      Metadata.Key.of("keybroker-request-id", Metadata.ASCII_STRING_MARSHALLER);
  /** Dropped from an {@link ErrorReason} name to give the word the daemon sends. */
  static final String REASON_PREFIX = "ERROR_REASON_";

  /** The constructor every keybroker exception shares. */
  @FunctionalInterface
  interface Factory {
    KeybrokerException create(
        String message, Status.Code code, String reason, String requestId, Throwable cause);
  }

  private Errors() {}

  /** The enum value a reason word names, or {@code UNRECOGNIZED} for a word it does not have. */
  static ErrorReason reasonOf(String word) {
    try {
      return ErrorReason.valueOf(REASON_PREFIX + word);
    } catch (IllegalArgumentException e) {
      return ErrorReason.UNRECOGNIZED;
    }
  }

  /**
   * The reason table: one arm per value of the proto's ErrorReason, so a value added to the proto
   * does not compile until it has one. {@code null}: the status code decides.
   */
  static Factory byReason(ErrorReason reason) {
    return switch (reason) {
      case ERROR_REASON_DECRYPTION_FAILED -> DecryptionException::new;
      case ERROR_REASON_VERIFICATION_FAILED -> VerificationException::new;
      case ERROR_REASON_KEY_NOT_FOUND -> KeyNotFoundException::new;
      case ERROR_REASON_PERMISSION_DENIED, ERROR_REASON_UNAUTHENTICATED ->
          PermissionDeniedException::new;
      case ERROR_REASON_INVALID_ARGUMENT -> InvalidParameterException::new;
      // No exception class of their own in this client.
      case ERROR_REASON_INTERNAL,
          ERROR_REASON_KEY_STATE,
          ERROR_REASON_WRONG_KEY_PURPOSE,
          ERROR_REASON_RESOURCE_EXHAUSTED,
          ERROR_REASON_RATE_LIMITED,
          ERROR_REASON_KMS_ERROR,
          ERROR_REASON_KMS_UNAVAILABLE,
          ERROR_REASON_KMS_AUTHENTICATION,
          ERROR_REASON_KEYSTORE_UNAVAILABLE,
          ERROR_REASON_KEYSTORE_READ_ONLY -> null;
      case ERROR_REASON_UNSPECIFIED, UNRECOGNIZED -> null;
    };
  }

  static KeybrokerException map(StatusRuntimeException e, String socket) {
    Status status = e.getStatus();
    Status.Code code = status.getCode();
    Metadata trailers = e.getTrailers();
    String reason = trailers == null ? null : trailers.get(REASON_KEY);
    String requestId = trailers == null ? null : trailers.get(REQUEST_ID_KEY);
    String message = status.getDescription() != null ? status.getDescription() : code.name();

    Factory byReason = reason == null ? null : byReason(reasonOf(reason));
    if (byReason != null) {
      return byReason.create(message, code, reason, requestId, e);
    }
    switch (code) {
      case NOT_FOUND:
        return new KeyNotFoundException(message, code, reason, requestId, e);
      case PERMISSION_DENIED:
      case UNAUTHENTICATED:
        return new PermissionDeniedException(message, code, reason, requestId, e);
      case INVALID_ARGUMENT:
        return new InvalidParameterException(message, code, reason, requestId, e);
      case UNAVAILABLE:
      case DEADLINE_EXCEEDED:
        return new BrokerUnavailableException(
            "keybroker daemon at " + socket + " is unavailable (" + code + ": " + message
                + "); check that the daemon is running and that KEYBROKER_SOCKET points at its"
                + " socket",
            code, reason, requestId, e);
      default:
        return new KeybrokerException(message, code, reason, requestId, e);
    }
  }
}
