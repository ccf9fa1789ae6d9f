import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';

import { Metadata, status } from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import {
  InvalidParameterError,
  KeybrokerError,
  ResourceExhaustedError,
  TokenGenerationError,
  findProtoDir,
} from '@keybroker/client';

import { BY_REASON, REASON_METADATA_KEY, fromServiceError } from '../dist/errors.js';

const PREFIX = 'ERROR_REASON_';

/** The words the daemon can send: ErrorReason value names from the proto, without the prefix. */
function enumWords() {
  const definition = protoLoader.loadSync(path.join('keybroker', 'v1', 'common.proto'), {
    includeDirs: [findProtoDir()],
  });
  const names = definition['keybroker.v1.ErrorReason'].type.value.map((value) => value.name);
  assert.ok(names.includes(`${PREFIX}UNSPECIFIED`), 'ErrorReason has its zero value');
  return names.filter((name) => name !== `${PREFIX}UNSPECIFIED`).map((name) => name.slice(PREFIX.length));
}

/** A failed call as @grpc/grpc-js reports it, with the daemon's reason trailer. */
function failure(code, reason) {
  const metadata = new Metadata();
  metadata.set(REASON_METADATA_KEY, reason);
  return Object.assign(new Error('details'), { code, details: 'details', metadata });
}

describe('reason table', () => {
  const words = enumWords();

  test('covers exactly the ErrorReason enum of the proto', () => {
    assert.deepEqual(Object.keys(BY_REASON).sort(), [...words].sort());
  });

  test('every enum word picks a class; INTERNAL keeps the operation class', () => {
    for (const word of words) {
      const err = fromServiceError(failure(status.UNKNOWN, word), TokenGenerationError, '/sock');
      assert.ok(err instanceof KeybrokerError, word);
      assert.equal(err.reason, word);
      assert.equal(err.constructor === TokenGenerationError, word === 'INTERNAL', word);
    }
  });

  test('RATE_LIMITED is a ResourceExhaustedError', () => {
    const rateLimited = failure(status.RESOURCE_EXHAUSTED, 'RATE_LIMITED');
    const err = fromServiceError(rateLimited, TokenGenerationError, '/sock');
    assert.ok(err instanceof ResourceExhaustedError);
  });

  test('words outside the enum use the operation class', () => {
    for (const word of [`${PREFIX}INVALID_ARGUMENT`, 'constructor', 'toString']) {
      const err = fromServiceError(failure(status.INVALID_ARGUMENT, word), TokenGenerationError, '/sock');
      assert.equal(err.constructor, TokenGenerationError, word);
      assert.ok(!(err instanceof InvalidParameterError), word);
    }
  });
});
