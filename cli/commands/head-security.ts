/** Turns `orion head`'s security flags into the head's credentials, access policy and limits. */
import { isIP } from 'node:net';
import type { ServerCredentials } from '@grpc/grpc-js';
import { loadServerCredentials } from '../../common/credentials.js';
import type { Logger } from '../../common/logger.js';
import { createHeadAuth, loadTokensFile, type HeadAuth } from '../../head/auth.js';
import type { HeadLimits } from '../../head/limits.js';
import { UsageError } from '../options.js';
import type { HeadSecurityFlags } from '../security-options.js';

export interface HeadSecurity {
  auth: HeadAuth;
  serverCredentials: ServerCredentials;
  limits: Partial<HeadLimits>;
}

/** Whether `host` (as given to --host, brackets allowed) only accepts connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.');
  return false;
}

/**
 * Refuses (exit 2) to serve a non-loopback address without authentication unless
 * --insecure is given: a head runs whatever commands its callers send.
 */
export function checkExposure(host: string, authenticated: boolean, insecure: boolean): void {
  if (authenticated || insecure || isLoopbackHost(host)) return;
  throw new UsageError(
    `refusing to listen on ${host} without authentication: anyone who can reach this port could run commands on your nodes.\n` +
      'Give --tls-cert, --tls-key and --tls-ca (mutual TLS; `orion certs init DIR` writes the files), or --tokens-file FILE, ' +
      'or --insecure if the network is trusted. (Loopback addresses such as 127.0.0.1 need none of these.)',
  );
}

export function configureHeadSecurity(host: string, f: HeadSecurityFlags, log: Logger): HeadSecurity {
  const tls = loadServerCredentials({ tlsCert: f.tlsCert, tlsKey: f.tlsKey, tlsCa: f.tlsCa });
  const tokens = f.tokensFile ? loadTokensFile(f.tokensFile, log) : undefined;
  const authenticated = tls.clientCertificates || tokens !== undefined;
  checkExposure(host, authenticated, Boolean(f.insecure));
  const allowClientCacheWrites = f.allowClientCacheWrites ?? !authenticated;
  const auth = createHeadAuth({ tokens, clientCertificates: tls.clientCertificates, allowClientCacheWrites });
  if (!authenticated && !isLoopbackHost(host)) log.warn({ host }, '--insecure: serving without authentication; anyone who can reach this port can run commands on the nodes');
  if (tokens && !tls.tls && !isLoopbackHost(host)) log.warn({ host }, 'bearer tokens travel in plaintext: add --tls-cert and --tls-key so they cannot be read off the network');
  log.info({ tls: tls.tls, clientCertificates: tls.clientCertificates, tokens: tokens?.size ?? 0, allowClientCacheWrites }, 'access control');
  const limits: Partial<HeadLimits> = {};
  if (f.maxBlobSize !== undefined) limits.maxBlobBytes = f.maxBlobSize;
  if (f.maxActionTimeout !== undefined) limits.maxActionTimeoutMs = f.maxActionTimeout;
  if (f.maxDagActions !== undefined) limits.maxDagActions = f.maxDagActions;
  return { auth, serverCredentials: tls.credentials, limits };
}
