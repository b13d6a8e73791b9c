/** Shared pieces of the security tests: tokens, raw RPCs, statuses. */
import * as grpc from '@grpc/grpc-js';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

export const TOKENS = {
  client: 'client-token-0123456789abcdef',
  node: 'node-token-0123456789abcdef00',
  admin: 'admin-token-0123456789abcdef0',
} as const;

export async function writeTokensFile(dir: string): Promise<string> {
  const file = path.join(dir, 'tokens');
  await writeFile(file, `# role token name\nclient ${TOKENS.client} alice\nnode ${TOKENS.node}\nadmin ${TOKENS.admin} ops\n`, { mode: 0o600 });
  return file;
}

export async function writeTokenFile(dir: string, role: keyof typeof TOKENS): Promise<string> {
  const file = path.join(dir, `${role}.token`);
  await writeFile(file, `${TOKENS[role]}\n`, { mode: 0o600 });
  return file;
}

export interface Outcome<T = unknown> {
  err?: grpc.ServiceError;
  res?: T;
}

/** Runs a callback-style unary call and returns its error or response. */
export function unaryOutcome<T>(start: (cb: (err: grpc.ServiceError | null, res?: T) => void) => unknown): Promise<Outcome<T>> {
  return new Promise((resolve) => start((err, res) => resolve(err ? { err } : { res })));
}

/** Collects a server stream until it ends or fails. */
export function streamOutcome<T>(stream: grpc.ClientReadableStream<T>): Promise<{ items: T[]; err?: grpc.ServiceError }> {
  const items: T[] = [];
  return new Promise((resolve) => {
    stream.on('data', (x: T) => items.push(x));
    stream.on('error', (err: grpc.ServiceError) => resolve({ items, err }));
    stream.on('end', () => resolve({ items }));
  });
}

export function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}
