import { existsSync } from 'node:fs';
import * as path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import {
  DecryptionError,
  EncryptionError,
  fromServiceError,
  GrpcServiceError,
  HashingError,
  InvalidParameterError,
  KeybrokerError,
  KMSError,
  SigningError,
  TokenGenerationError,
} from './errors';

export const DEFAULT_TIMEOUT_MS = 10_000;
export const DEV_SOCKET = path.join('.keybroker', 'keybroker.sock');
export const SYSTEM_SOCKET = '/run/keybroker/keybroker.sock';
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

const PROTO_FILES = [
  'keybroker/v1/envelope.proto',
  'keybroker/v1/signing.proto',
  'keybroker/v1/hashing.proto',
  'keybroker/v1/token.proto',
];

export type Context = Record<string, string>;
export type Bytes = Uint8Array; // Buffer is a Uint8Array
export type TokenEncoding = 'urlsafe' | 'hex' | 'bytes';

export interface ClientOptions {
  /** Socket path (or `unix:PATH`). Default: KEYBROKER_SOCKET, ./.keybroker/keybroker.sock, /run/keybroker/keybroker.sock. */
  socket?: string;
  /** Default deadline of every call, in milliseconds (10 000). */
  timeoutMs?: number;
  /** Directory holding `keybroker/v1/*.proto`; found next to the package by default. */
  protoDir?: string;
}

export interface CallOptions {
  /** Deadline of this call, overriding the client's default. */
  timeoutMs?: number;
}

/**
 * The socket path the client uses: the argument, else KEYBROKER_SOCKET, else
 * ./.keybroker/keybroker.sock if it exists, else /run/keybroker/keybroker.sock. Absolute.
 */
export function resolveSocket(socket?: string, env: NodeJS.ProcessEnv = process.env): string {
  let chosen = socket || env.KEYBROKER_SOCKET;
  if (!chosen) chosen = existsSync(DEV_SOCKET) ? DEV_SOCKET : SYSTEM_SOCKET;
  if (chosen.startsWith('unix://')) chosen = chosen.slice('unix://'.length);
  else if (chosen.startsWith('unix:')) chosen = chosen.slice('unix:'.length);
  return path.resolve(chosen);
}

/**
 * The proto directory: a copy shipped inside the package (`<package>/proto`, made by
 * `npm pack`), else the repository's `proto/` (`<package>/../../proto`).
 */
export function findProtoDir(): string {
  const packageRoot = path.resolve(__dirname, '..');
  const candidates = [path.join(packageRoot, 'proto'), path.resolve(packageRoot, '..', '..', 'proto')];
  for (const dir of candidates) {
    if (existsSync(path.join(dir, PROTO_FILES[0]))) return dir;
  }
  throw new Error(`keybroker proto files not found in ${candidates.join(' or ')}`);
}

// proto-loader gives untyped constructors; the client narrows what it reads.
type Stub = grpc.Client & Record<string, grpc.requestCallback<any> | any>;
type ServiceCtor = new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ClientOptions) => Stub;
type ErrorClass = new (message: string, options?: object) => KeybrokerError;

const definitionCache = new Map<string, grpc.GrpcObject>();

function loadPackage(protoDir: string): grpc.GrpcObject {
  let loaded = definitionCache.get(protoDir);
  if (!loaded) {
    const definition = protoLoader.loadSync(PROTO_FILES, {
      includeDirs: [protoDir],
      keepCase: false, // key_version -> keyVersion
      longs: String,
      enums: String,
      bytes: Buffer,
      defaults: true,
      oneofs: true,
    });
    loaded = grpc.loadPackageDefinition(definition);
    definitionCache.set(protoDir, loaded);
  }
  return loaded;
}

function requireBytes(name: string, value: unknown): Buffer {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a Buffer or Uint8Array, not ${typeof value}`);
  }
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function requireKey(value: unknown): string {
  if (typeof value !== 'string' || value === '') {
    throw new TypeError('key must be a non-empty string');
  }
  return value;
}

function checkContext(context: unknown): Context {
  if (context === undefined || context === null) return {};
  if (typeof context !== 'object' || Array.isArray(context)) {
    throw new TypeError('context must be an object of string keys to string values');
  }
  for (const [k, v] of Object.entries(context)) {
    if (typeof v !== 'string') throw new TypeError(`context value for "${k}" must be a string`);
  }
  return { ...(context as Context) };
}

const TOKEN_ENCODINGS: Record<TokenEncoding, string> = {
  urlsafe: 'TOKEN_ENCODING_URLSAFE',
  hex: 'TOKEN_ENCODING_HEX',
  bytes: 'TOKEN_ENCODING_BYTES',
};

/**
 * Client of the keybroker daemon. One client shares one channel; it connects on the first
 * call, so constructing it never fails because the daemon is down. Close it with `close()`.
 */
export class Client {
  readonly socket: string;
  readonly timeoutMs: number;
  private readonly channel: grpc.Channel;
  private readonly envelope: Stub;
  private readonly signing: Stub;
  private readonly hashing: Stub;
  private readonly tokens: Stub;

  constructor(options: ClientOptions = {}) {
    this.socket = resolveSocket(options.socket);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw new TypeError('timeoutMs must be a positive number');
    const v1 = (loadPackage(options.protoDir ?? findProtoDir()).keybroker as grpc.GrpcObject).v1 as grpc.GrpcObject;
    const target = `unix:${this.socket}`;
    const credentials = grpc.credentials.createInsecure();
    const channelOptions: grpc.ChannelOptions = {
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    };
    this.channel = new grpc.Channel(target, credentials, channelOptions);
    const make = (name: string): Stub =>
      new (v1[name] as unknown as ServiceCtor)(target, credentials, {
        ...channelOptions,
        channelOverride: this.channel,
      });
    this.envelope = make('EnvelopeService');
    this.signing = make('SigningService');
    this.hashing = make('HashingService');
    this.tokens = make('TokenService');
  }

  /** Seal `plaintext` under a logical key; the same `context` must be presented to decrypt. */
  async encrypt(
    plaintext: Bytes,
    options: CallOptions & { key?: string; context?: Context; storeContext?: boolean } = {},
  ): Promise<Buffer> {
    const request = {
      key: requireKey(options.key ?? 'default'),
      plaintext: requireBytes('plaintext', plaintext),
      context: checkContext(options.context),
      storeContext: Boolean(options.storeContext),
    };
    const response = await this.call(this.envelope, 'Encrypt', request, EncryptionError, options);
    return response.ciphertext as Buffer;
  }

  /** Open an envelope; rejects with DecryptionError if it or the context does not authenticate. */
  async decrypt(ciphertext: Bytes, options: CallOptions & { context?: Context } = {}): Promise<Buffer> {
    const request = {
      ciphertext: requireBytes('ciphertext', ciphertext),
      context: checkContext(options.context),
    };
    const response = await this.call(this.envelope, 'Decrypt', request, DecryptionError, options);
    return response.plaintext as Buffer;
  }

  /** Sign `data` with a broker signing key (DER for ECDSA). */
  async sign(data: Bytes, options: CallOptions & { key: string }): Promise<Buffer> {
    const request = { key: requireKey(options?.key), data: requireBytes('data', data) };
    const response = await this.call(this.signing, 'Sign', request, SigningError, options);
    return response.signature as Buffer;
  }

  /** Resolves to `true`, or rejects with VerificationError if the signature does not match. */
  async verify(data: Bytes, signature: Bytes, options: CallOptions & { key: string }): Promise<true> {
    const request = {
      key: requireKey(options?.key),
      data: requireBytes('data', data),
      signature: requireBytes('signature', signature),
    };
    await this.call(this.signing, 'Verify', request, SigningError, options);
    return true;
  }

  /** The PEM public key of a signing (or asymmetric) key, for verifying without the broker. */
  async publicKey(key: string, options: CallOptions = {}): Promise<string> {
    const response = await this.call(this.signing, 'GetPublicKey', { key: requireKey(key) }, KMSError, options);
    return response.pem as string;
  }

  /** HMAC-SHA256 of `data` under a broker HMAC key. */
  async hmac(data: Bytes, options: CallOptions & { key: string }): Promise<Buffer> {
    const request = { key: requireKey(options?.key), data: requireBytes('data', data) };
    const response = await this.call(this.hashing, 'ComputeHmac', request, HashingError, options);
    return response.mac as Buffer;
  }

  /** Resolves to `true`, or rejects with VerificationError if the MAC does not match. */
  async hmacVerify(data: Bytes, mac: Bytes, options: CallOptions & { key: string }): Promise<true> {
    const request = {
      key: requireKey(options?.key),
      data: requireBytes('data', data),
      mac: requireBytes('mac', mac),
    };
    await this.call(this.hashing, 'VerifyHmac', request, HashingError, options);
    return true;
  }

  /**
   * `length` random bytes from the broker's CSPRNG: unpadded URL-safe base64 (`urlsafe`,
   * default) or `hex` as a string, or a Buffer for `bytes`.
   */
  token(length?: number, options?: CallOptions & { encoding?: 'urlsafe' | 'hex' }): Promise<string>;
  token(length: number, options: CallOptions & { encoding: 'bytes' }): Promise<Buffer>;
  token(length?: number, options?: CallOptions & { encoding?: TokenEncoding }): Promise<string | Buffer>;
  async token(
    length = 32,
    options: CallOptions & { encoding?: TokenEncoding } = {},
  ): Promise<string | Buffer> {
    const encoding = options.encoding ?? 'urlsafe';
    if (!Object.prototype.hasOwnProperty.call(TOKEN_ENCODINGS, encoding)) {
      throw new InvalidParameterError(`encoding must be one of urlsafe, hex, bytes, not ${String(encoding)}`);
    }
    if (!Number.isInteger(length) || length <= 0) {
      throw new InvalidParameterError(`length must be a positive integer, not ${String(length)}`);
    }
    const request = { length, encoding: TOKEN_ENCODINGS[encoding] };
    const response = await this.call(this.tokens, 'GenerateToken', request, TokenGenerationError, options);
    return encoding === 'bytes' ? (response.token as Buffer) : (response.text as string);
  }

  /** Close the channel; calls made afterwards fail. */
  close(): void {
    this.channel.close(); // the one channel every service stub shares
  }

  private call(
    stub: Stub,
    method: string,
    request: object,
    fallback: ErrorClass,
    options: CallOptions | undefined,
  ): Promise<Record<string, unknown>> {
    const timeoutMs = options?.timeoutMs ?? this.timeoutMs;
    const deadline = new Date(Date.now() + timeoutMs);
    return new Promise((resolve, reject) => {
      (stub[method] as Function).call(
        stub,
        request,
        { deadline },
        (err: GrpcServiceError | null, response: Record<string, unknown>) => {
          if (err) reject(fromServiceError(err, fallback, this.socket));
          else resolve(response);
        },
      );
    });
  }
}
