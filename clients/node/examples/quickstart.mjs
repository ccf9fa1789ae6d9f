// Quickstart: run a dev daemon (`keybroker serve --dev`), point KEYBROKER_SOCKET at its
// socket (or run from the directory holding .keybroker/), then `node examples/quickstart.mjs`.
import { Buffer } from 'node:buffer';

import { Client, DecryptionError, VerificationError } from '@keybroker/client';

const client = new Client(); // socket: KEYBROKER_SOCKET, ./.keybroker/keybroker.sock, /run/keybroker/keybroker.sock
try {
  // Envelope encryption bound to an encryption context.
  const card = Buffer.from('4111 1111 1111 1111');
  const envelope = await client.encrypt(card, { key: 'default', context: { tenant: 'acme' } });
  const opened = await client.decrypt(envelope, { context: { tenant: 'acme' } });
  console.log('round trip ok:', opened.equals(card));

  try {
    await client.decrypt(envelope, { context: { tenant: 'globex' } });
  } catch (err) {
    if (!(err instanceof DecryptionError)) throw err;
    console.log('refused:', err.reason, '-', err.message);
  }

  // Signatures: verify resolves to true or rejects with VerificationError.
  const invoice = Buffer.from('invoice 42: EUR 100');
  const signature = await client.sign(invoice, { key: 'signing' });
  console.log('signature valid:', await client.verify(invoice, signature, { key: 'signing' }));
  try {
    await client.verify(Buffer.from('invoice 42: EUR 900'), signature, { key: 'signing' });
  } catch (err) {
    if (!(err instanceof VerificationError)) throw err;
    console.log('rejected:', err.reason);
  }

  // HMAC and random tokens.
  const mac = await client.hmac(Buffer.from('amount=100&to=acme'), { key: 'hmac' });
  console.log('hmac:', mac.toString('hex'));
  console.log('session id:', await client.token()); // 32 bytes, URL-safe base64
  console.log('api key:', await client.token(24, { encoding: 'hex' }));
} finally {
  client.close();
}
