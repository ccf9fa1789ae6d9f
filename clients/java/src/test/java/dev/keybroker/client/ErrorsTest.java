package dev.keybroker.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import io.grpc.Metadata;
import io.grpc.Status;
import java.util.EnumSet;
import java.util.Map;
import java.util.Set;
import keybroker.v1.Common.ErrorReason;
import org.junit.jupiter.api.Test;

/** The reason table against the proto's ErrorReason enum; no daemon needed. */
class ErrorsTest {
  /** Reasons with an exception class of their own; every other reason leaves it to the code. */
  private static final Map<ErrorReason, Class<? extends KeybrokerException>> OWN_CLASS =
      Map.of(
          ErrorReason.ERROR_REASON_DECRYPTION_FAILED, DecryptionException.class,
          ErrorReason.ERROR_REASON_VERIFICATION_FAILED, VerificationException.class,
          ErrorReason.ERROR_REASON_KEY_NOT_FOUND, KeyNotFoundException.class,
          ErrorReason.ERROR_REASON_PERMISSION_DENIED, PermissionDeniedException.class,
          ErrorReason.ERROR_REASON_UNAUTHENTICATED, PermissionDeniedException.class,
          ErrorReason.ERROR_REASON_INVALID_ARGUMENT, InvalidParameterException.class);

  /** Every value the daemon can send: the enum without its zero value and protobuf's marker. */
  private static Set<ErrorReason> sentReasons() {
    Set<ErrorReason> reasons = EnumSet.allOf(ErrorReason.class);
    reasons.remove(ErrorReason.ERROR_REASON_UNSPECIFIED);
    reasons.remove(ErrorReason.UNRECOGNIZED);
    return reasons;
  }

  private static String word(ErrorReason reason) {
    return reason.name().substring(Errors.REASON_PREFIX.length());
  }

  private static KeybrokerException failure(Status status, String reason) {
    Metadata trailers = new Metadata();
    trailers.put(Errors.REASON_KEY, reason);
    return Errors.map(status.withDescription("details").asRuntimeException(trailers), "/sock");
  }

  @Test
  void everyEnumWordIsRecognised() {
    for (ErrorReason reason : sentReasons()) {
      assertEquals(reason, Errors.reasonOf(word(reason)), reason.name());
    }
  }

  @Test
  void everyEnumWordPicksItsClassWhateverTheCode() {
    for (ErrorReason reason : sentReasons()) {
      KeybrokerException e = failure(Status.UNKNOWN, word(reason));
      Class<? extends KeybrokerException> expected =
          OWN_CLASS.getOrDefault(reason, KeybrokerException.class);
      assertSame(expected, e.getClass(), word(reason));
      assertEquals(word(reason), e.reason());
    }
  }

  @Test
  void reasonsWithoutAClassOfTheirOwnFollowTheCode() {
    for (ErrorReason reason : sentReasons()) {
      if (!OWN_CLASS.containsKey(reason)) {
        KeybrokerException e = failure(Status.NOT_FOUND, word(reason));
        assertSame(KeyNotFoundException.class, e.getClass(), word(reason));
      }
    }
  }

  @Test
  void wordsOutsideTheEnumAreNotMapped() {
    for (String word : new String[] {"ERROR_REASON_DECRYPTION_FAILED", "DECRYPTION_FAILURE", ""}) {
      assertEquals(ErrorReason.UNRECOGNIZED, Errors.reasonOf(word), word);
      assertSame(InvalidParameterException.class,
          failure(Status.INVALID_ARGUMENT, word).getClass(), word);
    }
  }
}
