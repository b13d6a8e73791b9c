import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { ClusterClient, NodeStatus, type NodeInfo } from '../../proto/gen/orion/v1/cluster.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The CLI as users run it: the bundle `make build` writes. */
export const ORION = path.join(REPO, 'dist/orion.mjs');

export interface Daemon {
  proc: ChildProcess;
  output: () => string;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `orion ARGS` as a real process; output (stdout+stderr) is kept for assertions. */
export function startOrion(args: string[], env: Record<string, string> = {}): Daemon {
  const proc = spawn(process.execPath, [ORION, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    proc,
    output: () => out,
    async kill(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      lastErr = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
}

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `orion-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function startHeadProcess(dataDir: string, extra: string[] = []): Promise<Daemon & { address: string }> {
  const d = startOrion(['head', '--port', '0', '--data-dir', dataDir, ...extra]);
  const address = await waitFor('head to listen', () => /orion head listening on (\S+)/.exec(d.output())?.[1], 20_000);
  return { ...d, address };
}

export function startNodeProcess(head: string, id: string, workDir: string, extra: string[] = []): Daemon {
  return startOrion(['node', '--head', head, '--id', id, '--work-dir', workDir, ...extra]);
}

export async function listNodes(head: string, status = NodeStatus.NODE_STATUS_UNSPECIFIED): Promise<NodeInfo[]> {
  const client = new ClusterClient(head, credentials.createInsecure());
  try {
    return await new Promise((resolve, reject) => client.listNodes({ status }, (err, r) => (err ? reject(err) : resolve(r.nodes))));
  } finally {
    client.close();
  }
}

export async function waitForActiveNodes(head: string, n: number): Promise<NodeInfo[]> {
  return waitFor(`${n} active nodes`, async () => {
    const nodes = await listNodes(head, NodeStatus.NODE_STATUS_ACTIVE);
    return nodes.length >= n ? nodes : undefined;
  });
}

/** A local port with nothing listening on it. */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}
