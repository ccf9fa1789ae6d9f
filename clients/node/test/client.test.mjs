import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import {
  BrokerUnavailableError,
  Client,
  DecryptionError,
  InvalidParameterError,
  KeybrokerError,
  KeyNotFoundError,
  KMSError,
  KMSKeyNotFoundError,
  VerificationError,
  resolveSocket,
} from '@keybroker/client';

import { daemonSocket } from './daemon.mjs';

const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('against a real dev daemon', () => {
  let socket;
  let client;

  before(() => {
    socket = daemonSocket();
    client = new Client({ socket });
  });

  after(() => {
    client?.close();
  });

  test('encrypt/decrypt round trip with a context', async () => {
    const plaintext = Buffer.from('4111 1111 1111 1111');
    const envelope = await client.encrypt(plaintext, { context: { tenant: 'acme', table: 'cards' } });
    assert.ok(Buffer.isBuffer(envelope));
    assert.ok(!envelope.includes(plaintext));
    const opened = await client.decrypt(envelope, { context: { table: 'cards', tenant: 'acme' } });
    assert.deepEqual(opened, plaintext);
    // Uint8Array input and the explicit default key work too.
    const raw = new Uint8Array([0, 1, 2, 255]);
    const sealed = await client.encrypt(raw, { key: 'default' });
    assert.deepEqual(new Uint8Array(await client.decrypt(sealed)), raw);
  });

  test('storeContext keeps the context in the envelope', async () => {
    const envelope = await client.encrypt(Buffer.from('note'), { context: { tenant: 'acme' }, storeContext: true });
    assert.equal((await client.decrypt(envelope)).toString(), 'note');
  });

  test('wrong context -> DecryptionError', async () => {
    const envelope = await client.encrypt(Buffer.from('secret'), { context: { tenant: 'acme' } });
    await assert.rejects(client.decrypt(envelope, { context: { tenant: 'globex' } }), (err) => {
      assert.ok(err instanceof DecryptionError);
      assert.ok(err instanceof KeybrokerError);
      assert.equal(err.reason, 'DECRYPTION_FAILED');
      assert.equal(err.codeName, 'INVALID_ARGUMENT');
      assert.equal(err.name, 'DecryptionError');
      return true;
    });
    await assert.rejects(client.decrypt(envelope), DecryptionError); // missing context
    await assert.rejects(client.decrypt(Buffer.from('junk')), DecryptionError);
  });

  test('unknown key -> KeyNotFoundError', async () => {
    await assert.rejects(client.encrypt(Buffer.from('x'), { key: 'no-such-key' }), (err) => {
      assert.ok(err instanceof KeyNotFoundError);
      assert.ok(err instanceof KMSKeyNotFoundError);
      assert.ok(err instanceof KMSError);
      assert.equal(err.reason, 'KEY_NOT_FOUND');
      assert.equal(err.codeName, 'NOT_FOUND');
      return true;
    });
    await assert.rejects(client.sign(Buffer.from('x'), { key: 'no-such-key' }), KeyNotFoundError);
  });

  test('sign/verify, and a tampered message -> VerificationError', async () => {
    const data = Buffer.from('invoice 42: EUR 100');
    const signature = await client.sign(data, { key: 'signing' });
    assert.equal(await client.verify(data, signature, { key: 'signing' }), true);
    await assert.rejects(
      client.verify(Buffer.from('invoice 42: EUR 900'), signature, { key: 'signing' }),
      (err) => err instanceof VerificationError && err.reason === 'VERIFICATION_FAILED',
    );
    const tampered = Buffer.from(signature);
    tampered[tampered.length - 1] ^= 0x01;
    await assert.rejects(client.verify(data, tampered, { key: 'signing' }), VerificationError);
    assert.match(await client.publicKey('signing'), /^-----BEGIN PUBLIC KEY-----/);
  });

  test('hmac and hmacVerify', async () => {
    const mac = await client.hmac(Buffer.from('amount=100'), { key: 'hmac' });
    assert.equal(mac.length, 32);
    assert.equal(await client.hmacVerify(Buffer.from('amount=100'), mac, { key: 'hmac' }), true);
    await assert.rejects(client.hmacVerify(Buffer.from('amount=900'), mac, { key: 'hmac' }), VerificationError);
  });

  test('token length and encodings', async () => {
    const urlsafe = await client.token();
    assert.match(urlsafe, /^[A-Za-z0-9_-]{43}$/);
    assert.match(await client.token(24, { encoding: 'hex' }), /^[0-9a-f]{48}$/);
    const raw = await client.token(16, { encoding: 'bytes' });
    assert.ok(Buffer.isBuffer(raw));
    assert.equal(raw.length, 16);
    await assert.rejects(client.token(8), (err) => err instanceof InvalidParameterError && err.code !== null);
    await assert.rejects(client.token(0), (err) => err instanceof InvalidParameterError && err.code === null);
    await assert.rejects(client.token(16, { encoding: 'base32' }), InvalidParameterError);
  });

  test('wrong argument types -> TypeError before any call', async () => {
    await assert.rejects(client.encrypt('text'), TypeError);
    await assert.rejects(client.encrypt(Buffer.from('x'), { context: { n: 1 } }), TypeError);
    await assert.rejects(client.sign(Buffer.from('x'), {}), TypeError);
  });

  test('examples/quickstart.mjs runs (exit 0)', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['examples/quickstart.mjs'], {
      cwd: PACKAGE_DIR,
      env: { ...process.env, KEYBROKER_SOCKET: socket },
      timeout: 30_000,
    });
    assert.match(stdout, /round trip ok: true/);
    assert.match(stdout, /rejected: VERIFICATION_FAILED/);
  });
});

describe('without a daemon', () => {
  test('a missing socket -> BrokerUnavailableError naming it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kb-none-'));
    const socket = path.join(dir, 'keybroker.sock');
    const client = new Client({ socket, timeoutMs: 2_000 });
    try {
      await assert.rejects(client.token(), (err) => {
        assert.ok(err instanceof BrokerUnavailableError);
        assert.ok(err.message.includes(socket));
        assert.ok(err.message.includes('KEYBROKER_SOCKET'));
        return true;
      });
    } finally {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('socket resolution order', () => {
    assert.equal(resolveSocket('/x/a.sock', { KEYBROKER_SOCKET: '/y/b.sock' }), '/x/a.sock');
    assert.equal(resolveSocket('unix:/x/a.sock', {}), '/x/a.sock');
    assert.equal(resolveSocket(undefined, { KEYBROKER_SOCKET: '/y/b.sock' }), '/y/b.sock');
    assert.equal(resolveSocket('rel.sock', {}), path.resolve('rel.sock'));
    // No option, no env, no ./.keybroker/keybroker.sock in the package dir: the system socket.
    assert.equal(resolveSocket(undefined, {}), '/run/keybroker/keybroker.sock');
  });
});
