/** Build ids: what the head groups a build's requests under (kept apart from the gRPC code). */
import { randomBytes } from 'node:crypto';
import os from 'node:os';

/** A new build id: readable and unique enough ("hostname-20240501T101500-1a2b3c"). */
export function newBuildId(now = new Date(), host = os.hostname()): string {
  const t = now.toISOString().replace(/[-:]/g, '').slice(0, 15);
  return `${host.replace(/[^A-Za-z0-9.-]/g, '').slice(0, 40) || 'build'}-${t}-${randomBytes(3).toString('hex')}`;
}
