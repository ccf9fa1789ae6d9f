/**
 * The exception hierarchy, mirroring the Python client (docs/clients/python.md, "Exceptions").
 *
 * Mapping is in one place, {@link fromServiceError}: by the daemon's reason word (trailing
 * metadata `keybroker-error-reason`) first, then by gRPC status code, then the operation's own
 * class.
 */
import { Metadata, status } from '@grpc/grpc-js';

export const REASON_METADATA_KEY = 'keybroker-error-reason';
export const REQUEST_ID_METADATA_KEY = 'keybroker-request-id';

export interface KeybrokerErrorOptions {
  /** gRPC status code (`status` from `@grpc/grpc-js`), or null for errors raised by the client. */
  code?: number | null;
  /** The daemon's stable reason word, for example `DECRYPTION_FAILED`. */
  reason?: string | null;
  /** The id under which the daemon logged the failure. */
  requestId?: string | null;
  cause?: unknown;
}

/** Base class of every error this package throws (except `TypeError` for wrong argument types). */
export class KeybrokerError extends Error {
  readonly code: number | null;
  readonly reason: string | null;
  readonly requestId: string | null;

  constructor(message: string, options: KeybrokerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code ?? null;
    this.reason = options.reason ?? null;
    this.requestId = options.requestId ?? null;
  }

  /** The status code's name (`INVALID_ARGUMENT`, …) or null. */
  get codeName(): string | null {
    return this.code === null ? null : (status[this.code] ?? String(this.code));
  }
}

export class EncryptionError extends KeybrokerError {}
export class DecryptionError extends KeybrokerError {}
export class SigningError extends KeybrokerError {}
/** A failed check (signature, MAC): `verify*` methods resolve to `true` or reject with this. */
export class VerificationError extends KeybrokerError {}
export class HashingError extends KeybrokerError {}
export class KeyDerivationError extends KeybrokerError {}
export class TokenGenerationError extends KeybrokerError {}
export class InvalidParameterError extends KeybrokerError {}
export class PermissionDeniedError extends KeybrokerError {}
export class AuthenticationError extends PermissionDeniedError {}
export class KeyStateError extends KeybrokerError {}
export class ResourceExhaustedError extends KeybrokerError {}
export class KMSError extends KeybrokerError {}
export class KMSUnavailableError extends KMSError {}
export class KMSAuthenticationError extends KMSError {}
/** Unknown logical key (Python: `KMSKeyNotFoundError`, also exported under that name). */
export class KeyNotFoundError extends KMSError {}
/** The daemon cannot be reached (not running, wrong socket) or the deadline passed. */
export class BrokerUnavailableError extends KeybrokerError {}
export class UnsupportedOperationError extends KeybrokerError {}

export { KeyNotFoundError as KMSKeyNotFoundError };

type ErrorClass = new (message: string, options?: KeybrokerErrorOptions) => KeybrokerError;

/**
 * The reason table: one entry per value of the proto's `ErrorReason` enum
 * (proto/keybroker/v1/common.proto), keyed by the word the daemon sends, the value name without
 * its `ERROR_REASON_` prefix; test/errors.test.mjs checks it against the proto. `null`: the word
 * does not pick a class, the operation's own class is used.
 * @internal
 */
export const BY_REASON: Readonly<Record<string, ErrorClass | null>> = {
  INTERNAL: null,
  INVALID_ARGUMENT: InvalidParameterError,
  DECRYPTION_FAILED: DecryptionError,
  VERIFICATION_FAILED: VerificationError,
  UNAUTHENTICATED: AuthenticationError,
  PERMISSION_DENIED: PermissionDeniedError,
  KEY_NOT_FOUND: KeyNotFoundError,
  KEY_STATE: KeyStateError,
  WRONG_KEY_PURPOSE: KeyStateError,
  RESOURCE_EXHAUSTED: ResourceExhaustedError,
  RATE_LIMITED: ResourceExhaustedError,
  KMS_ERROR: KMSError,
  KMS_UNAVAILABLE: KMSUnavailableError,
  KMS_AUTHENTICATION: KMSAuthenticationError,
  KEYSTORE_UNAVAILABLE: KMSError,
  KEYSTORE_READ_ONLY: KMSError,
};

const BY_CODE: ReadonlyMap<number, ErrorClass> = new Map<number, ErrorClass>([
  [status.INVALID_ARGUMENT, InvalidParameterError],
  [status.PERMISSION_DENIED, PermissionDeniedError],
  [status.NOT_FOUND, KeyNotFoundError],
  [status.RESOURCE_EXHAUSTED, ResourceExhaustedError],
  [status.UNAVAILABLE, BrokerUnavailableError],
  [status.DEADLINE_EXCEEDED, BrokerUnavailableError],
  [status.UNIMPLEMENTED, UnsupportedOperationError],
]);

/** What `@grpc/grpc-js` passes to a failed call's callback. */
export interface GrpcServiceError extends Error {
  code: number;
  details: string;
  metadata?: Metadata;
}

function firstString(metadata: Metadata | undefined, key: string): string | null {
  const value = metadata?.get(key)[0];
  if (value === undefined) return null;
  return typeof value === 'string' ? value : value.toString('utf8');
}

/** The class a reason word picks; own keys only, so `constructor` cannot reach Object.prototype. */
function reasonClass(reason: string): ErrorClass | null | undefined {
  return Object.hasOwn(BY_REASON, reason) ? BY_REASON[reason] : undefined;
}

/**
 * Convert a gRPC failure to the matching KeybrokerError subclass.
 * @param fallback the operation's own class, used for reasons/codes the table does not name.
 * @param socket named in BrokerUnavailableError messages.
 */
export function fromServiceError(
  err: GrpcServiceError,
  fallback: ErrorClass,
  socket: string,
): KeybrokerError {
  const reason = firstString(err.metadata, REASON_METADATA_KEY);
  const requestId = firstString(err.metadata, REQUEST_ID_METADATA_KEY);
  // A reason is only sent by the daemon; without one, the code decides (transport errors too).
  const cls = (reason === null ? BY_CODE.get(err.code) : reasonClass(reason)) ?? fallback;
  let message = err.details || err.message;
  if (cls === BrokerUnavailableError) {
    message =
      `keybroker daemon unavailable at ${socket} (${status[err.code] ?? err.code}: ${message}); ` +
      'check that the daemon is running and that KEYBROKER_SOCKET points at its socket';
  }
  return new cls(message, { code: err.code, reason, requestId, cause: err });
}
