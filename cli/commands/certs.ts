/**
 * `orion certs init DIR`: a private CA plus head, node and client certificates
 * for a small cluster, made with the openssl command-line tool. Each client
 * certificate carries its role twice (subject OU and SAN URI orion-role:ROLE),
 * the head certificate names localhost, 127.0.0.1 and every --host given.
 * A node certificate's CN is the node id it may register as: node.crt is
 * `orion-node` (what `orion node --tls-cert node.crt` uses without --id), and
 * each --node ID adds node-ID.crt with CN=ID.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { Code, OrionError } from '../../common/errors.js';

export interface CertsInitOptions {
  dir: string;
  /** Extra names (DNS or IP) the head is reached by. */
  hosts: string[];
  /** Validity of the issued certificates in days (the CA gets ten times as long). */
  days: number;
  /** Overwrite existing files. */
  force: boolean;
  /** Node ids to issue node-ID.{crt,key} for, besides node.{crt,key} (CN orion-node). */
  nodes?: string[];
  openssl?: string;
}

const ROLES = ['node', 'client', 'admin'] as const;

/** The node id of node.crt: its CN. */
export const DEFAULT_NODE_ID = 'orion-node';

/** Node ids as the head accepts them (head/node-registry.ts). */
const NODE_ID = /^[A-Za-z0-9._:@-]{1,128}$/;

function sanFor(hosts: string[]): string {
  const names = ['localhost', '127.0.0.1', '::1', ...hosts];
  const seen = new Set<string>();
  const parts: string[] = [];
  for (const n of names) {
    const v = n.replace(/^\[|\]$/g, '');
    if (seen.has(v)) continue;
    seen.add(v);
    if (isIP(v)) parts.push(`IP:${v}`);
    else if (/^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(v)) parts.push(`DNS:${v}`);
    else throw new OrionError(Code.INVALID_ARGUMENT, `--host ${JSON.stringify(n)} is neither a DNS name nor an IP address`);
  }
  return parts.join(',');
}

/** Writes ca.{crt,key}, head.{crt,key}, node.{crt,key}, client.{crt,key}, admin.{crt,key} and node-ID.{crt,key} per --node; returns the files written. */
export async function certsInit(o: CertsInitOptions): Promise<string[]> {
  const openssl = o.openssl ?? 'openssl';
  const probe = await execa(openssl, ['version'], { reject: false });
  if (probe.failed) {
    throw new OrionError(Code.FAILED_PRECONDITION, `orion certs init needs the openssl command-line tool: ${probe.shortMessage ?? 'not found'}`, {
      hint: 'install it (apt-get install openssl, or `make system-deps`), or make the certificates with your own CA',
    });
  }
  const nodes = [...new Set(o.nodes ?? [])];
  for (const id of nodes) {
    if (!NODE_ID.test(id)) throw new OrionError(Code.INVALID_ARGUMENT, `--node ${JSON.stringify(id)} is not a node id: use 1-128 characters of [A-Za-z0-9._:@-]`);
  }
  const dir = path.resolve(o.dir);
  const names = ['ca', 'head', ...ROLES, ...nodes.map((id) => `node-${id}`)];
  const files = names.flatMap((n) => [path.join(dir, `${n}.crt`), path.join(dir, `${n}.key`)]);
  const existing = files.filter((f) => existsSync(f));
  if (existing.length > 0 && !o.force) {
    throw new OrionError(Code.ALREADY_EXISTS, `${existing[0]} already exists`, { hint: 'pass --force to replace the certificates in that directory' });
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const work = await mkdtemp(path.join(os.tmpdir(), 'orion-certs-'));
  const run = async (args: string[]) => {
    const r = await execa(openssl, args, { reject: false, cwd: work });
    if (r.failed) throw new OrionError(Code.INTERNAL, `openssl ${args[0]} failed: ${String(r.stderr || r.shortMessage).trim()}`);
  };
  const key = async (name: string) => {
    await run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path.join(dir, `${name}.key`)]);
    await chmod(path.join(dir, `${name}.key`), 0o600);
  };
  const serial = () => `0x${randomBytes(16).toString('hex')}`;
  const issue = async (name: string, subject: string, ext: string[]) => {
    await key(name);
    const csr = path.join(work, `${name}.csr`);
    const extFile = path.join(work, `${name}.ext`);
    await writeFile(extFile, `[v3]\n${ext.join('\n')}\n`);
    await run(['req', '-new', '-key', path.join(dir, `${name}.key`), '-subj', subject, '-out', csr]);
    await run(['x509', '-req', '-in', csr, '-CA', path.join(dir, 'ca.crt'), '-CAkey', path.join(dir, 'ca.key'), '-set_serial', serial(), '-days', String(o.days), '-sha256', '-extfile', extFile, '-extensions', 'v3', '-out', path.join(dir, `${name}.crt`)]);
  };
  try {
    await key('ca');
    await run(['req', '-x509', '-new', '-key', path.join(dir, 'ca.key'), '-subj', '/O=Orion/CN=Orion cluster CA', '-days', String(o.days * 10), '-sha256', '-set_serial', serial(),
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', path.join(dir, 'ca.crt')]);
    const common = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid'];
    await issue('head', '/O=Orion/OU=head/CN=orion-head', [...common, 'extendedKeyUsage=serverAuth', `subjectAltName=${sanFor(o.hosts)}`]);
    for (const role of ROLES) {
      await issue(role, `/O=Orion/OU=${role}/CN=orion-${role}`, [...common, 'extendedKeyUsage=clientAuth', `subjectAltName=URI:orion-role:${role}`]);
    }
    for (const id of nodes) {
      await issue(`node-${id}`, `/O=Orion/OU=node/CN=${id}`, [...common, 'extendedKeyUsage=clientAuth', 'subjectAltName=URI:orion-role:node']);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return files;
}

export function certsUsage(dir: string, nodes: string[] = []): string {
  const d = dir;
  return [
    `wrote a CA and certificates to ${d} (keep ca.key offline; give each machine only its own key)`,
    '',
    `  orion head --host 0.0.0.0 --tls-cert ${d}/head.crt --tls-key ${d}/head.key --tls-ca ${d}/ca.crt`,
    `  orion node --head HEAD:50050 --tls-cert ${d}/node.crt --tls-key ${d}/node.key --tls-ca ${d}/ca.crt    # node id ${DEFAULT_NODE_ID} (the certificate's CN)`,
    ...[...new Set(nodes)].map((id) => `  orion node --head HEAD:50050 --tls-cert ${d}/node-${id}.crt --tls-key ${d}/node-${id}.key --tls-ca ${d}/ca.crt    # node id ${id}`),
    `  orion build --head HEAD:50050 --tls-cert ${d}/client.crt --tls-key ${d}/client.key --tls-ca ${d}/ca.crt`,
    `  orion status --head HEAD:50050 --tls-cert ${d}/admin.crt --tls-key ${d}/admin.key --tls-ca ${d}/ca.crt`,
    '',
  ].join('\n');
}
