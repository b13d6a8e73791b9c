/** The security options of `orion head`, `node`, `build` and `status`, shared by their command-table entries. */
import { Command, Option } from 'commander';
import type { ClientAuthOptions } from '../common/credentials.js';
import { parseByteSize } from '../head/limits.js';
import { UsageError, parseDuration } from './options.js';

/** --tls-cert/--tls-key/--tls-ca/--token-file for commands that talk to a head. */
export function addClientAuthOptions(cmd: Command): Command {
  return cmd
    .option('--tls-cert <file>', 'client certificate (PEM) for mutual TLS with the head')
    .option('--tls-key <file>', 'private key of --tls-cert')
    .option('--tls-ca <file>', 'CA certificate that the head\'s certificate must chain to (turns TLS on)')
    .option('--token-file <file>', 'file holding a bearer token for the head (or set ORION_TOKEN; never on the command line)');
}

export function clientAuthFrom(o: { tlsCert?: string; tlsKey?: string; tlsCa?: string; tokenFile?: string }): ClientAuthOptions {
  return { tlsCert: o.tlsCert, tlsKey: o.tlsKey, tlsCa: o.tlsCa, tokenFile: o.tokenFile };
}

export interface HeadSecurityFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tokensFile?: string;
  insecure?: boolean;
  allowClientCacheWrites?: boolean;
  maxBlobSize?: number;
  maxActionTimeout?: number;
  maxDagActions?: number;
}

const byteSize = (flag: string) => (v: string) => {
  const n = parseByteSize(v);
  if (n === undefined) throw new UsageError(`${flag}: expected a size such as 1GiB, 512MiB or 1048576, got ${JSON.stringify(v)}`);
  return n;
};

const positiveInt = (flag: string) => (v: string) => {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`${flag}: expected a positive whole number, got ${JSON.stringify(v)}`);
  return n;
};

const duration = (flag: string) => (v: string) => parseDuration(v, flag);

/** The head's authentication, TLS and request-limit options. */
export function addHeadSecurityOptions(cmd: Command): Command {
  return cmd
    .option('--tls-cert <file>', 'serve TLS with this certificate (PEM; `orion certs init` writes one)')
    .option('--tls-key <file>', 'private key of --tls-cert')
    .option('--tls-ca <file>', 'require client certificates signed by this CA (mutual TLS; role from OU or SAN URI orion-role:ROLE)')
    .option('--tokens-file <file>', 'accept bearer tokens listed as "ROLE TOKEN" lines (roles: client, node, admin)')
    .addOption(new Option('--insecure', 'allow listening on a non-loopback address without --tls-ca or --tokens-file (anyone who reaches the port can run commands)'))
    .option('--allow-client-cache-writes', 'let clients write the action cache (Bazel cache-only mode; default: on without authentication, off with it)')
    .option('--no-allow-client-cache-writes', 'only results of this head\'s own nodes enter the action cache')
    .option('--max-blob-size <size>', 'largest blob the CAS accepts', byteSize('--max-blob-size'), 1024 ** 3)
    .option('--max-action-timeout <duration>', 'longest action timeout (longer requests are rejected; actions without one get this)', duration('--max-action-timeout'), 3_600_000)
    .option('--max-dag-actions <n>', 'most actions one build may submit to the Builds service', positiveInt('--max-dag-actions'), 200_000);
}

export function headSecurityFrom(o: HeadSecurityFlags): HeadSecurityFlags {
  return {
    tlsCert: o.tlsCert,
    tlsKey: o.tlsKey,
    tlsCa: o.tlsCa,
    tokensFile: o.tokensFile,
    insecure: Boolean(o.insecure),
    allowClientCacheWrites: o.allowClientCacheWrites,
    maxBlobSize: o.maxBlobSize,
    maxActionTimeout: o.maxActionTimeout,
    maxDagActions: o.maxDagActions,
  };
}
