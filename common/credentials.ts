/**
 * Loading the credentials Orion's processes present and accept: TLS certificates
 * and keys from files, and bearer tokens from a file or ORION_TOKEN (never from
 * the command line, where `ps` shows them to every user of the machine).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { credentials, InterceptingCall, ServerCredentials, type ChannelCredentials, type ClientOptions, type Interceptor } from '@grpc/grpc-js';
import { Code, OrionError } from './errors.js';

/** The metadata key a bearer token travels in (gRPC's standard `authorization`). */
export const AUTHORIZATION_HEADER = 'authorization';

export interface TlsFiles {
  /** PEM certificate (chain) this process presents. */
  tlsCert?: string;
  /** PEM private key of tlsCert. */
  tlsKey?: string;
  /** PEM CA bundle that the peer's certificate must chain to. */
  tlsCa?: string;
}

export interface ClientAuthOptions extends TlsFiles {
  /** File holding the bearer token (first non-empty line). */
  tokenFile?: string;
}

/** What a gRPC client needs to reach a head: channel credentials plus client options (the bearer token). */
export interface ClientAuth {
  credentials: ChannelCredentials;
  /** Spread into every client's options: adds the bearer-token interceptor when a token is set. */
  channelOptions: Partial<ClientOptions>;
  /** For logs: "tls+token", "mtls", "insecure", ... (never the secret). */
  describe: string;
}

function readFlagFile(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new OrionError(Code.FAILED_PRECONDITION, `cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      hint: `check the path given to ${flag} (\`orion certs init DIR\` writes a CA and certificates for a small cluster)`,
    });
  }
}

/**
 * The subject CN of the (first) certificate in a PEM file given as --tls-cert, or
 * undefined when it has none. A node's certificate CN is the node id the head lets it use.
 */
export function certificateCommonName(certFile: string): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFlagFile(certFile, '--tls-cert'));
  } catch (err) {
    if (err instanceof OrionError) throw err;
    throw new OrionError(Code.INVALID_ARGUMENT, `--tls-cert ${certFile} is not a PEM certificate: ${(err as Error).message}`);
  }
  const line = cert.subject.split('\n').find((l) => l.startsWith('CN='));
  return line ? line.slice(3) || undefined : undefined;
}

/**
 * The node id `orion node` uses without --id: the CN of its client certificate (the id
 * the head binds that certificate to; a CN ending in '*' is a prefix, completed with
 * `fallback`), else `fallback` (hostname-pid).
 */
export function defaultNodeId(tlsCert: string | undefined, fallback: string): string {
  const cn = tlsCert ? certificateCommonName(tlsCert) : undefined;
  if (!cn) return fallback;
  return cn.endsWith('*') ? `${cn.slice(0, -1)}${fallback}` : cn;
}

/** A token is printable ASCII without spaces, so it fits an HTTP/2 header unchanged. */
export function validateToken(token: string, where: string): string {
  if (!/^[\x21-\x7e]+$/.test(token)) throw new OrionError(Code.INVALID_ARGUMENT, `${where}: a token must be printable ASCII without spaces`);
  if (token.length < 16) throw new OrionError(Code.INVALID_ARGUMENT, `${where}: a token must be at least 16 characters long (e.g. \`openssl rand -hex 32\`)`);
  return token;
}

/** The bearer token from --token-file, else ORION_TOKEN, else none. */
export function readClientToken(tokenFile: string | undefined, env: Record<string, string | undefined>): string | undefined {
  if (tokenFile) {
    const line = readFlagFile(tokenFile, '--token-file')
      .toString('utf8')
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l !== '' && !l.startsWith('#'));
    if (!line) throw new OrionError(Code.INVALID_ARGUMENT, `--token-file ${tokenFile} holds no token`);
    return validateToken(line, `--token-file ${tokenFile}`);
  }
  const fromEnv = env.ORION_TOKEN?.trim();
  return fromEnv ? validateToken(fromEnv, 'ORION_TOKEN') : undefined;
}

/** A client interceptor that sends `authorization: Bearer TOKEN` with every call. */
export function bearerTokenInterceptor(token: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set(AUTHORIZATION_HEADER, `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/**
 * Without --tls-ca the head is checked against Node's bundled roots plus NODE_EXTRA_CA_CERTS,
 * as for Node's own TLS (grpc-js alone would leave that file out; and the launcher keeps it
 * from Node's start-up). Null: grpc-js's defaults.
 */
export function systemRoots(extraFile = process.env.NODE_EXTRA_CA_CERTS): Buffer | null {
  if (!extraFile) return null;
  let extra: string;
  try {
    extra = readFileSync(extraFile, 'utf8');
  } catch (err) {
    // As Node does at start-up: a warning, and the default roots.
    process.emitWarning(`Ignoring extra certs from \`${extraFile}\`, load failed: ${(err as Error).message}`);
    return null;
  }
  return Buffer.from(`${rootCertificates.join('\n')}\n${extra}`);
}

let silenced = false;
/**
 * grpc-js sends the target host as TLS SNI even when it is an IP address, and Node
 * warns about that (DEP0123) on every connection to HEAD_IP:PORT. The certificate
 * is still checked against the IP (the head certificate lists it), so drop the noise.
 */
function silenceIpServerNameWarning(): void {
  if (silenced) return;
  silenced = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

/**
 * Credentials for node, build and status. TLS when any --tls-* flag is given
 * (--tls-ca alone: verify the head only; with --tls-cert/--tls-key: mutual TLS).
 */
export function loadClientAuth(o: ClientAuthOptions, env: Record<string, string | undefined> = process.env): ClientAuth {
  if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) {
    throw new OrionError(Code.INVALID_ARGUMENT, '--tls-cert and --tls-key go together: give both or neither');
  }
  const tls = Boolean(o.tlsCert || o.tlsCa);
  if (tls) silenceIpServerNameWarning();
  const channel = tls
    ? credentials.createSsl(
        o.tlsCa ? readFlagFile(o.tlsCa, '--tls-ca') : systemRoots(),
        o.tlsKey ? readFlagFile(o.tlsKey, '--tls-key') : null,
        o.tlsCert ? readFlagFile(o.tlsCert, '--tls-cert') : null,
      )
    : credentials.createInsecure();
  const token = readClientToken(o.tokenFile, env);
  const kind = o.tlsCert ? 'mtls' : tls ? 'tls' : 'insecure';
  return {
    credentials: channel,
    channelOptions: token ? { interceptors: [bearerTokenInterceptor(token)] } : {},
    describe: token ? `${kind}+token` : kind,
  };
}

/**
 * The head's server credentials: plaintext without --tls-cert; TLS with it;
 * mutual TLS (every client must present a certificate signed by the CA) with --tls-ca.
 */
export function loadServerCredentials(o: TlsFiles): { credentials: ServerCredentials; tls: boolean; clientCertificates: boolean } {
  if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) {
    throw new OrionError(Code.INVALID_ARGUMENT, '--tls-cert and --tls-key go together: give both or neither');
  }
  if (o.tlsCa && !o.tlsCert) {
    throw new OrionError(Code.INVALID_ARGUMENT, '--tls-ca needs --tls-cert and --tls-key: the head must present a certificate of its own to use mutual TLS');
  }
  if (!o.tlsCert) return { credentials: ServerCredentials.createInsecure(), tls: false, clientCertificates: false };
  const ca = o.tlsCa ? readFlagFile(o.tlsCa, '--tls-ca') : null;
  const pair = { cert_chain: readFlagFile(o.tlsCert, '--tls-cert'), private_key: readFlagFile(o.tlsKey!, '--tls-key') };
  return { credentials: ServerCredentials.createSsl(ca, [pair], ca !== null), tls: true, clientCertificates: ca !== null };
}
