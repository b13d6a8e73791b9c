/**
 * Who may call what on the head. A caller authenticates with a bearer token
 * (lines `ROLE TOKEN` of --tokens-file) or with a client certificate (mutual TLS;
 * the role is the subject's OU or a SAN URI `orion-role:ROLE`). Each role may
 * call a fixed set of RPCs:
 *
 *   client  Execute/WaitExecution, read the action cache, read and write the CAS,
 *           read the cluster API; UpdateActionResult only with --allow-client-cache-writes
 *   node    Register/Connect, read and write the CAS (inputs and outputs)
 *   admin   everything
 *
 * Health checks need no credential. When the head has no authentication
 * configured (plaintext on loopback, or --insecure) every caller is anonymous
 * and may call everything except UpdateActionResult, which follows
 * --allow-client-cache-writes (default on in that mode).
 *
 * A caller's identity is `certificate:CN` or `token:NAME` (tokens without a
 * NAME are `token:ROLE@lineN`). A node credential is bound to node ids: a
 * certificate to its CN, a token to its NAME when the line gives one; a pattern
 * ending in '*' (CN=ci-*) is a prefix. Node tokens without a NAME, admins and
 * anonymous callers may use any node id. See `nodeIdAllowed`.
 *
 * `authorize` is the single decision point: the gRPC interceptor below and the
 * head's HTTP endpoints both call it.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { ServerInterceptingCall, type Metadata, type ServerInterceptor } from '@grpc/grpc-js';
import { Code, OrionError } from '../common/errors.js';
import { AUTHORIZATION_HEADER, validateToken } from '../common/credentials.js';
import type { Logger } from '../common/logger.js';

export const ROLES = ['client', 'node', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface Principal {
  /** 'anonymous' only when the head has no authentication configured. */
  role: Role | 'anonymous';
  via: 'token' | 'certificate' | 'none';
  /** For logs: the token's name or the certificate's CN. */
  name: string;
  /**
   * Who the caller is, for binding node ids and operations to it: 'certificate:CN',
   * 'token:NAME' or 'anonymous'. Two credentials with the same identity are the same caller.
   */
  identity: string;
  /** The node ids a node credential may use: exact ids, or prefixes ending in '*'. Undefined: any. */
  nodeIds?: readonly string[];
}

/** What a caller presented: the `authorization` header and/or a verified TLS client certificate. */
export interface PresentedCredentials {
  authorization?: string;
  certificate?: PeerCertificate;
}

/**
 * Permissions are gRPC method paths ('/pkg.Service/Method') or 'http:...' for
 * the head's HTTP endpoints (e.g. 'http:dashboard').
 */
export type Permission = string;

export interface TokenEntry {
  role: Role;
  name: string;
  /** Whether the line gave a NAME (a node token with a NAME may only be that node id). */
  named: boolean;
}

export interface AuthConfig {
  /** Bearer tokens by the SHA-256 (hex) of the token. */
  tokens?: Map<string, TokenEntry>;
  /** Mutual TLS: the transport already verified each client certificate against the CA. */
  clientCertificates?: boolean;
  /** Whether the client role may write the action cache (Bazel's cache-only mode). */
  allowClientCacheWrites: boolean;
}

export interface HeadAuth {
  /** Whether callers must authenticate (tokens or client certificates are configured). */
  readonly enabled: boolean;
  readonly allowClientCacheWrites: boolean;
  /** Who the caller is; UNAUTHENTICATED when auth is enabled and the credential is missing or wrong. */
  authenticate(c: PresentedCredentials): Principal;
  /** `authenticate` plus the role check: PERMISSION_DENIED when the role may not do `permission`. */
  authorize(c: PresentedCredentials, permission: Permission): Principal;
  /** Whether `role` may do `permission` (no authentication involved). */
  allows(role: Principal['role'], permission: Permission): boolean;
}

const REAPI = '/build.bazel.remote.execution.v2.';
export const UPDATE_ACTION_RESULT = `${REAPI}ActionCache/UpdateActionResult`;

/** Paths anyone may call, even without a credential. */
const PUBLIC_PREFIXES = ['/grpc.health.v1.Health/'];

/** First match wins; a path no rule names is admin-only. */
const RULES: [prefix: string, roles: readonly Role[]][] = [
  [`${REAPI}Capabilities/`, ['client', 'node']],
  [`${REAPI}ContentAddressableStorage/`, ['client', 'node']],
  ['/google.bytestream.ByteStream/', ['client', 'node']],
  [`${REAPI}ActionCache/GetActionResult`, ['client']],
  [`${REAPI}Execution/`, ['client']],
  ['/google.longrunning.Operations/', ['client']],
  ['/orion.v1.Worker/', ['node']],
  ['/orion.v1.Cluster/', ['client']],
  ['/orion.v1.Builds/', ['client']],
  ['http:', ['client']],
];

export const sha256Hex = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/**
 * Parses a tokens file: one `ROLE TOKEN [NAME]` per line, '#' comments and
 * blank lines ignored. Errors name the line (the token itself is never echoed).
 * The NAME of a node token is the node id it may register as ('*' at the end: a prefix).
 */
export function parseTokensFile(text: string, file: string): Map<string, TokenEntry> {
  const tokens = new Map<string, TokenEntry>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `${file}:${i + 1}`;
    const [role, token, name, ...rest] = line.split(/\s+/);
    if (!token || rest.length > 0) throw new OrionError(Code.INVALID_ARGUMENT, `${where}: expected "ROLE TOKEN [NAME]"`);
    if (!(ROLES as readonly string[]).includes(role!)) throw new OrionError(Code.INVALID_ARGUMENT, `${where}: unknown role ${JSON.stringify(role)} (roles: ${ROLES.join(', ')})`);
    validateToken(token, where);
    const key = sha256Hex(token);
    if (tokens.has(key)) throw new OrionError(Code.INVALID_ARGUMENT, `${where}: this token is already listed (line of ${tokens.get(key)!.name})`);
    tokens.set(key, { role: role as Role, name: name ?? `${role}@line${i + 1}`, named: name !== undefined });
  });
  if (tokens.size === 0) throw new OrionError(Code.INVALID_ARGUMENT, `${file} lists no tokens`);
  return tokens;
}

export function loadTokensFile(file: string, log?: Logger): Map<string, TokenEntry> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
    if ((statSync(file).mode & 0o077) !== 0) log?.warn({ file }, 'the tokens file is readable by other users: chmod 600 it');
  } catch (err) {
    throw new OrionError(Code.FAILED_PRECONDITION, `cannot read --tokens-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseTokensFile(text, file);
}

/** The Orion roles a certificate names, from SAN URIs `orion-role:ROLE` and subject OUs. */
export function certificateRoles(cert: PeerCertificate): Role[] {
  const found = new Set<Role>();
  for (const part of (cert.subjectaltname ?? '').split(',')) {
    const m = /^\s*URI:orion-role:(\w+)\s*$/.exec(part);
    if (m && (ROLES as readonly string[]).includes(m[1]!)) found.add(m[1] as Role);
  }
  const ou = cert.subject?.OU as string | string[] | undefined;
  for (const u of Array.isArray(ou) ? ou : ou ? [ou] : []) if ((ROLES as readonly string[]).includes(u)) found.add(u as Role);
  return [...found];
}

const commonName = (cert: PeerCertificate): string | undefined => {
  const cn = cert.subject?.CN as string | string[] | undefined;
  return Array.isArray(cn) ? cn[0] : cn || undefined;
};
const describeCert = (cert: PeerCertificate) => commonName(cert) ?? cert.fingerprint256 ?? 'certificate';

const ANONYMOUS: Principal = { role: 'anonymous', via: 'none', name: 'anonymous', identity: 'anonymous' };

/** Whether `p` may register or connect as node `nodeId` (its credential's binding; see the top of this file). */
export function nodeIdAllowed(p: Principal, nodeId: string): boolean {
  if (p.nodeIds === undefined) return true;
  return p.nodeIds.some((pattern) => (pattern.endsWith('*') ? nodeId.startsWith(pattern.slice(0, -1)) : nodeId === pattern));
}

/**
 * The PERMISSION_DENIED for a node credential that names a node id it is not bound to.
 * `doing`: 'register' or 'connect'.
 */
export function nodeIdDenied(p: Principal, nodeId: string, doing: 'register' | 'connect'): OrionError {
  const ids = (p.nodeIds ?? []).map((id) => JSON.stringify(id)).join(', ') || 'none';
  const what = p.via === 'certificate' ? 'certificate (its CN)' : 'token (its NAME in the tokens file)';
  const hint =
    p.via === 'certificate'
      ? `start the node with --id matching the CN, or issue it a certificate with CN=${nodeId} (\`orion certs init DIR --node ${nodeId}\`)`
      : `start the node with --id matching the token's NAME, or give it a token whose line in the tokens file names ${nodeId}`;
  return new OrionError(Code.PERMISSION_DENIED, `node ${JSON.stringify(p.name)} may not ${doing} as node id ${JSON.stringify(nodeId)}: its ${what} binds it to node id ${ids}`, { hint });
}

export function createHeadAuth(config: AuthConfig): HeadAuth {
  const tokens = config.tokens ?? new Map<string, TokenEntry>();
  const enabled = tokens.size > 0 || Boolean(config.clientCertificates);

  function allows(role: Principal['role'], permission: Permission): boolean {
    if (PUBLIC_PREFIXES.some((p) => permission.startsWith(p))) return true;
    if (permission === UPDATE_ACTION_RESULT) return role === 'admin' || ((role === 'client' || role === 'anonymous') && config.allowClientCacheWrites);
    if (role === 'admin' || role === 'anonymous') return true;
    const rule = RULES.find(([prefix]) => permission.startsWith(prefix));
    return rule !== undefined && rule[1].includes(role);
  }

  function authenticate(c: PresentedCredentials): Principal {
    if (!enabled) return ANONYMOUS;
    if (c.authorization !== undefined && tokens.size > 0) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(c.authorization);
      if (!m) throw new OrionError(Code.UNAUTHENTICATED, 'malformed authorization header: expected "Bearer TOKEN"');
      // Looked up by hash: the comparison time does not depend on how much of a guess is right.
      const entry = tokens.get(sha256Hex(m[1]!));
      if (!entry) throw new OrionError(Code.UNAUTHENTICATED, 'the bearer token is not valid for this head');
      const nodeIds = entry.role === 'node' && entry.named ? [entry.name] : undefined;
      return { role: entry.role, via: 'token', name: entry.name, identity: `token:${entry.name}`, ...(nodeIds ? { nodeIds } : {}) };
    }
    if (c.certificate && config.clientCertificates) {
      const roles = certificateRoles(c.certificate);
      const name = describeCert(c.certificate);
      if (roles.length !== 1) {
        throw new OrionError(Code.PERMISSION_DENIED, `client certificate ${JSON.stringify(name)} ${roles.length === 0 ? 'names no Orion role' : `names several roles (${roles.join(', ')})`}`, {
          hint: 'issue it with exactly one of OU=client, OU=node, OU=admin (or a SAN URI orion-role:ROLE), e.g. with `orion certs init`',
        });
      }
      const cn = commonName(c.certificate);
      const nodeIds = roles[0] === 'node' ? (cn ? [cn] : []) : undefined;
      return { role: roles[0]!, via: 'certificate', name, identity: `certificate:${name}`, ...(nodeIds ? { nodeIds } : {}) };
    }
    const ways = [tokens.size > 0 ? 'a bearer token (--token-file or ORION_TOKEN)' : '', config.clientCertificates ? 'a client certificate (--tls-cert/--tls-key)' : ''].filter(Boolean);
    throw new OrionError(Code.UNAUTHENTICATED, `this head requires authentication: ${ways.join(' or ')}`);
  }

  return {
    enabled,
    allowClientCacheWrites: config.allowClientCacheWrites,
    authenticate,
    allows,
    authorize(c, permission) {
      if (PUBLIC_PREFIXES.some((p) => permission.startsWith(p))) return ANONYMOUS;
      const principal = authenticate(c);
      if (!allows(principal.role, permission)) {
        const hint = permission === UPDATE_ACTION_RESULT ? 'only results produced by the head\'s own nodes enter the action cache; an operator may start the head with --allow-client-cache-writes' : undefined;
        throw new OrionError(Code.PERMISSION_DENIED, `${principal.role} ${JSON.stringify(principal.name)} may not call ${permission}`, { hint });
      }
      return principal;
    },
  };
}

/** Logs at most `burst` lines per `windowMs` (denials must not become a log flood). */
function throttled(windowMs: number, burst: number, now = Date.now) {
  let start = 0;
  let count = 0;
  return (fn: (dropped: number) => void) => {
    const t = now();
    if (t - start > windowMs) {
      const dropped = Math.max(0, count - burst);
      start = t;
      count = 0;
      if (dropped > 0) fn(dropped);
    }
    if (++count <= burst) fn(0);
  };
}

/**
 * Who made each call the interceptor let through, keyed by the metadata object
 * grpc-js hands on to the handler: nothing a caller sends can forge an entry.
 */
const callers = new WeakMap<Metadata, Principal>();

/**
 * The authenticated caller of an RPC, from its handler's `call.metadata`.
 * Undefined when no auth interceptor ran (a service used on its own); the head
 * always installs it, so behind a head every call has a caller ('anonymous'
 * without authentication).
 */
export function callerOf(metadata: Metadata): Principal | undefined {
  return callers.get(metadata);
}

/**
 * A grpc-js server interceptor that checks every call before its handler runs:
 * a refused call ends with UNAUTHENTICATED or PERMISSION_DENIED and the handler
 * never sees it. The token is removed from the metadata handlers receive, and
 * the caller recorded for `callerOf`.
 */
export function createAuthInterceptor(auth: HeadAuth, log: Logger): ServerInterceptor {
  const logDenied = throttled(10_000, 20);
  return (method, call) =>
    new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            const authorization = metadata.get(AUTHORIZATION_HEADER)[0];
            let principal: Principal;
            try {
              principal = auth.authorize({ authorization: authorization === undefined ? undefined : String(authorization), certificate: call.getAuthContext().sslPeerCertificate }, method.path);
            } catch (err) {
              const e = err instanceof OrionError ? err : new OrionError(Code.UNAUTHENTICATED, String(err));
              logDenied((dropped) =>
                dropped > 0 ? log.warn({ dropped }, 'more refused calls were not logged') : log.warn({ method: method.path, peer: call.getPeer(), code: e.codeName, reason: e.message }, 'call refused'),
              );
              call.sendStatus({ code: e.code, details: e.hint ? `${e.message} (${e.hint})` : e.message, metadata: null });
              return;
            }
            metadata.remove(AUTHORIZATION_HEADER);
            callers.set(metadata, principal);
            nextMetadata(metadata);
          },
        });
      },
    });
}

/** The credentials an HTTP request presented (for the head's HTTP endpoints). */
export function presentedFromHttp(req: IncomingMessage): PresentedCredentials {
  const socket = req.socket as Partial<TLSSocket>;
  const certificate = socket.authorized && typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : undefined;
  return { authorization: req.headers.authorization, certificate: certificate && certificate.raw ? certificate : undefined };
}

/**
 * Checks an HTTP request: `{ ok: true, principal }`, or the status (401/403) and
 * message to answer with. Example: `const a = authorizeHttp(head.auth, req, 'http:dashboard')`.
 */
export function authorizeHttp(auth: HeadAuth, req: IncomingMessage, permission: Permission = 'http:dashboard'): { ok: true; principal: Principal } | { ok: false; status: 401 | 403; message: string } {
  try {
    return { ok: true, principal: auth.authorize(presentedFromHttp(req), permission) };
  } catch (err) {
    const e = err instanceof OrionError ? err : new OrionError(Code.UNAUTHENTICATED, String(err));
    return { ok: false, status: e.code === Code.PERMISSION_DENIED ? 403 : 401, message: e.message };
  }
}
