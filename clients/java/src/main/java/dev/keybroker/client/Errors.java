package dev.keybroker.client;

import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;

/** The one place that maps a gRPC failure to a keybroker exception: reason first, then code. */
final class Errors {
  static final Metadata.Key<String> REASON_KEY =
      Metadata.Key.of("keybroker-error-reason", Metadata.ASCII_STRING_MARSHALLER);
  static final Metadata.Key<String> REQUEST_ID_KEY =
      Metadata.Key.of("keybroker-request-id", Metadata.ASCII_STRING_MARSHALLER);

  private Errors() {}

  static KeybrokerException map(StatusRuntimeException e, String socket) {
    Status status = e.getStatus();
    Status.Code code = status.getCode();
    Metadata trailers = e.getTrailers();
    String reason = trailers == null ? null : trailers.get(REASON_KEY);
    String requestId = trailers == null ? null : trailers.get(REQUEST_ID_KEY);
    String message = status.getDescription() != null ? status.getDescription() : code.name();

    if (reason != null) {
      switch (reason) {
        case "DECRYPTION_FAILED":
          return new DecryptionException(message, code, reason, requestId, e);
        case "VERIFICATION_FAILED":
          return new VerificationException(message, code, reason, requestId, e);
        case "KEY_NOT_FOUND":
          return new KeyNotFoundException(message, code, reason, requestId, e);
        case "PERMISSION_DENIED":
        case "UNAUTHENTICATED":
          return new PermissionDeniedException(message, code, reason, requestId, e);
        case "INVALID_ARGUMENT":
          return new InvalidParameterException(message, code, reason, requestId, e);
        default:
          break; // fall through to the status code
      }
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
