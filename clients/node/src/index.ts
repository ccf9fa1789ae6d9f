/**
 * @keybroker/client — Node.js client of the keybroker daemon.
 *
 *   const client = new Client();            // socket from KEYBROKER_SOCKET or the defaults
 *   const envelope = await client.encrypt(Buffer.from('secret'), { context: { tenant: 'acme' } });
 */
export {
  Client,
  resolveSocket,
  findProtoDir,
  DEFAULT_TIMEOUT_MS,
  DEV_SOCKET,
  SYSTEM_SOCKET,
} from './client';
export type { ClientOptions, CallOptions, Context, Bytes, TokenEncoding } from './client';
export {
  KeybrokerError,
  EncryptionError,
  DecryptionError,
  SigningError,
  VerificationError,
  HashingError,
  KeyDerivationError,
  TokenGenerationError,
  InvalidParameterError,
  PermissionDeniedError,
  AuthenticationError,
  KeyStateError,
  ResourceExhaustedError,
  KMSError,
  KMSUnavailableError,
  KMSAuthenticationError,
  KeyNotFoundError,
  KMSKeyNotFoundError,
  BrokerUnavailableError,
  UnsupportedOperationError,
  REASON_METADATA_KEY,
  REQUEST_ID_METADATA_KEY,
} from './errors';
export type { KeybrokerErrorOptions } from './errors';
