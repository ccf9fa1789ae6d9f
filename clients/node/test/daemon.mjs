// Starts a real dev keybroker daemon for the tests and stops it afterwards.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@keybroker/client';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const PYTHON = process.env.KEYBROKER_PYTHON ?? path.join(REPO, '.venv', 'bin', 'python');

/** Spawn `python -m broker serve --dev` in a temp state dir; resolves once a call succeeds. */
export async function startDaemon({ timeoutMs = 30_000 } = {}) {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'kb-node-'));
  const socket = path.join(stateDir, 'keybroker.sock');
  const env = { ...process.env };
  delete env.KEYBROKER_SOCKET; // the daemon must use --state-dir's socket
  const child = spawn(PYTHON, ['-m', 'broker', 'serve', '--dev', '--state-dir', stateDir], {
    cwd: stateDir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  let exited = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));

  const stop = async () => {
    if (exited === null) {
      const done = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000); // graceful stop, else kill
      await done;
      clearTimeout(timer);
    }
    rmSync(stateDir, { recursive: true, force: true });
  };

  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  while (Date.now() < deadline) {
    if (exited !== null) {
      await stop();
      throw new Error(`daemon exited early (${JSON.stringify(exited)}):\n${output}`);
    }
    if (existsSync(socket)) {
      const probe = new Client({ socket, timeoutMs: 2_000 });
      try {
        await probe.token(16);
        return { socket, stateDir, stop, output: () => output };
      } catch (err) {
        lastError = err;
      } finally {
        probe.close();
      }
    }
    await sleep(100);
  }
  await stop();
  throw new Error(`daemon not ready after ${timeoutMs} ms (${lastError}):\n${output}`);
}
