import { createLogger } from '../../common/logger.js';
import { startHead } from '../../head/head.js';
import { daemonSignal } from '../signals.js';
import type { HeadSecurityFlags } from '../security-options.js';
import { configureHeadSecurity } from './head-security.js';

export interface HeadCommandOptions {
  listen: string;
  dataDir: string;
  /** Bytes of disk the CAS may use (default 50 GiB), and how long a used blob is kept whatever the size (default 1 h). */
  casMaxBytes?: number;
  casKeepMs?: number;
  /** Bytes of disk the action cache may use per instance name (default 512 MiB). */
  actionCacheMaxBytes?: number;
  heartbeatTimeoutMs: number;
  /** Least time an action runs before a speculative copy of it may start. */
  stragglerMinMs?: number;
  logLevel: string;
  /** TLS, tokens, --insecure, cache-write policy and request limits. */
  security?: HeadSecurityFlags;
  /** host:port for the dashboard, JSON API and /metrics. */
  httpListen?: string;
}

export async function runHead(o: HeadCommandOptions): Promise<void> {
  const log = createLogger({ level: o.logLevel, name: 'orion-head' });
  const security = configureHeadSecurity(o.listen.slice(0, o.listen.lastIndexOf(':')), o.security ?? {}, log);
  const head = await startHead({ listen: o.listen, dataDir: o.dataDir, cas: { maxBytes: o.casMaxBytes, keepMs: o.casKeepMs }, actionCacheMaxBytes: o.actionCacheMaxBytes, heartbeatTimeoutMs: o.heartbeatTimeoutMs, stragglerMinMs: o.stragglerMinMs, log, httpListen: o.httpListen, ...security });
  // Tests and scripts read this line to learn the port when --port 0 was given.
  process.stdout.write(`orion head listening on ${head.address}\n`);
  if (head.httpUrl) process.stdout.write(`orion head dashboard on ${head.httpUrl}/\n`);
  const signal = daemonSignal(log);
  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  await head.stop();
  log.info('head stopped');
  log.flush?.();
}
