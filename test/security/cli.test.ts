/** The security flags end to end: real `orion head`, `node` and `status` processes. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/cli.js';
import { checkExposure, isLoopbackHost } from '../../cli/commands/head-security.js';
import { UsageError } from '../../cli/options.js';
import { startHeadProcess, startOrion, tempDir, waitFor, type Daemon } from '../helpers/daemons.js';
import { TOKENS, writeTokenFile, writeTokensFile } from './helpers.js';

async function cli(...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { code, stdout, stderr };
}

/** Runs `orion ARGS` to completion. */
async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const d = startOrion(args, env);
  const code = await new Promise<number | null>((r) => d.proc.on('exit', (c) => r(c)));
  await new Promise((r) => setTimeout(r, 20));
  return { code, output: d.output() };
}

let tmp: { dir: string; cleanup: () => Promise<void> };
const daemons: Daemon[] = [];
beforeEach(async () => {
  tmp = await tempDir('sec-cli');
});
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.kill()));
  await tmp.cleanup();
});

describe('orion head: exposure', () => {
  it('tells loopback addresses from the others', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '[::]', '10.0.0.1', 'head.example.com']) expect(isLoopbackHost(h), h).toBe(false);
    expect(() => checkExposure('0.0.0.0', false, false)).toThrow(UsageError);
    expect(() => checkExposure('0.0.0.0', true, false)).not.toThrow();
    expect(() => checkExposure('0.0.0.0', false, true)).not.toThrow();
  });

  it('refuses to listen on a non-loopback address without authentication, exit 2, naming the flags', async () => {
    const r = await run(['head', '--host', '0.0.0.0', '--port', '0', '--data-dir', path.join(tmp.dir, 'h')]);
    expect(r.code).toBe(2);
    expect(r.output).toContain('orion: refusing to listen on 0.0.0.0 without authentication');
    for (const flag of ['--tls-cert', '--tls-key', '--tls-ca', '--tokens-file', '--insecure']) expect(r.output).toContain(flag);
    expect(r.output).not.toContain('orion head listening');
  });

  it('listens on a non-loopback address with --insecure, and warns', async () => {
    const d = startOrion(['head', '--host', '0.0.0.0', '--port', '0', '--data-dir', path.join(tmp.dir, 'h'), '--insecure']);
    daemons.push(d);
    await waitFor('head to listen', () => /orion head listening on 0\.0\.0\.0:\d+/.test(d.output()) || undefined);
    expect(d.output()).toContain('--insecure: serving without authentication');
  });

  it('refuses --tls-ca without a certificate of its own, and a missing tokens file', async () => {
    const a = await run(['head', '--port', '0', '--data-dir', path.join(tmp.dir, 'h'), '--tls-ca', '/nonexistent/ca.crt']);
    expect(a.code).toBe(1);
    expect(a.output).toContain('--tls-ca needs --tls-cert and --tls-key');
    const b = await run(['head', '--port', '0', '--data-dir', path.join(tmp.dir, 'h'), '--tokens-file', path.join(tmp.dir, 'missing')]);
    expect(b.code).toBe(1);
    expect(b.output).toMatch(/cannot read --tokens-file .*missing: ENOENT/);
  });

  it('takes no token on the command line', async () => {
    const r = await cli('status', '--head', '127.0.0.1:1', '--token', TOKENS.client);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: unknown option '--token'");
  });
});

describe('a cluster with bearer tokens', () => {
  it('admits a node with a node token and a client with a client token, and turns the wrong roles away', async () => {
    const tokens = await writeTokensFile(tmp.dir);
    const head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--tokens-file', tokens]);
    daemons.push(head);
    // A node holding a client token is refused and stops, saying why.
    const refused = await run(['node', '--head', head.address, '--id', 'impostor', '--work-dir', path.join(tmp.dir, 'n0'), '--no-sandbox'], { ORION_TOKEN: TOKENS.client });
    expect(refused.code).toBe(1);
    expect(refused.output).toContain(`the head at ${head.address} refused this node: Register: client "alice" may not call /orion.v1.Worker/Register`);

    const node = startOrion(['node', '--head', head.address, '--id', 'n1', '--work-dir', path.join(tmp.dir, 'n1'), '--no-sandbox', '--token-file', await writeTokenFile(tmp.dir, 'node')]);
    daemons.push(node);
    const clientToken = await writeTokenFile(tmp.dir, 'client');
    await waitFor('the node to be listed', async () => {
      const r = await cli('status', '--head', head.address, '--token-file', clientToken);
      return r.code === 0 && /^n1\s/m.test(r.stdout) ? r : undefined;
    });
    const asNode = await cli('status', '--head', head.address, '--token-file', await writeTokenFile(tmp.dir, 'node'));
    expect(asNode.code).toBe(1);
    expect(asNode.stderr).toBe(`orion: the head at ${head.address} refused: node "node@line3" may not call /orion.v1.Cluster/ListNodes\n`);
    const anonymous = await cli('status', '--head', head.address);
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toContain('refused: this head requires authentication');
    expect(head.output()).toContain('call refused');
  });
});

describe('a cluster with mutual TLS', () => {
  it('runs with the certificates `orion certs init` writes', async () => {
    const certs = path.join(tmp.dir, 'certs');
    const init = await cli('certs', 'init', certs, '--host', 'head.example', '--days', '2', '--node', 'build1');
    expect(init.code).toBe(0);
    expect(init.stdout).toContain(`orion head --host 0.0.0.0 --tls-cert ${certs}/head.crt --tls-key ${certs}/head.key --tls-ca ${certs}/ca.crt`);
    expect(init.stdout).toContain(`orion node --head HEAD:50050 --tls-cert ${certs}/node-build1.crt --tls-key ${certs}/node-build1.key --tls-ca ${certs}/ca.crt    # node id build1`);
    for (const f of ['ca', 'head', 'node', 'client', 'admin', 'node-build1']) expect(existsSync(path.join(certs, `${f}.crt`))).toBe(true);
    const again = await cli('certs', 'init', certs);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`${certs}/ca.crt already exists\nhint: pass --force`);

    const tls = (who: string) => ['--tls-cert', path.join(certs, `${who}.crt`), '--tls-key', path.join(certs, `${who}.key`), '--tls-ca', path.join(certs, 'ca.crt')];
    // Non-loopback is allowed: clients must present certificates.
    const head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--host', '0.0.0.0', ...tls('head')]);
    daemons.push(head);
    const address = head.address.replace('0.0.0.0', '127.0.0.1');
    // A node certificate is bound to the node id of its CN: another --id is refused, and the node stops.
    const wrongId = await run(['node', '--head', address, '--id', 'tls-node', '--work-dir', path.join(tmp.dir, 'n0'), '--no-sandbox', ...tls('node')]);
    expect(wrongId.code).toBe(1);
    expect(wrongId.output).toContain(`the head at ${address} refused this node: Register: node "orion-node" may not register as node id "tls-node": its certificate (its CN) binds it to node id "orion-node"`);
    // Without --id the node takes the CN.
    const node = startOrion(['node', '--head', address, '--work-dir', path.join(tmp.dir, 'n1'), '--no-sandbox', ...tls('node')]);
    daemons.push(node);
    await waitFor('the node to be listed', async () => {
      const r = await cli('status', '--head', address, ...tls('admin'));
      return r.code === 0 && /^orion-node\s/m.test(r.stdout) ? r : undefined;
    });
    const asNode = await cli('status', '--head', address, ...tls('node'));
    expect(asNode.code).toBe(1);
    expect(asNode.stderr).toContain('refused: node "orion-node" may not call /orion.v1.Cluster/ListNodes');
    const plaintext = await cli('status', '--head', address);
    expect(plaintext.code).toBe(1);
    expect(plaintext.stderr).toContain(`cannot reach the head at ${address}`);
    expect(node.output()).not.toContain('DEP0123');
  });
});
