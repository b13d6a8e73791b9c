/**
 * dist/orion.mjs run as a program starts through /bin/sh, which keeps
 * NODE_EXTRA_CA_CERTS from Node's start-up (Node parses it before any code
 * runs); Orion puts it back for the processes it starts and adds it to the
 * roots of TLS connections made without --tls-ca. Real processes: the
 * launcher, make, a head with TLS.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { rootCertificates } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemRoots } from '../../common/credentials.js';
import { ORION, startHeadProcess, tempDir, type Daemon } from '../helpers/daemons.js';

const run = promisify(execFile);

/** Runs `argv` and gives its exit code and output, never throwing on a failed exit. */
async function exec(argv: string[], opts: { cwd?: string; env: Record<string, string | undefined> }) {
  try {
    const r = await run(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: opts.env as NodeJS.ProcessEnv, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('the orion launcher and NODE_EXTRA_CA_CERTS', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: (Daemon & { address: string }) | undefined;
  let certs: string;
  const env = (extra: Record<string, string | undefined>) => {
    const e: Record<string, string | undefined> = { ...process.env, ...extra };
    for (const [k, v] of Object.entries(e)) if (v === undefined) delete e[k];
    return e;
  };

  beforeAll(async () => {
    tmp = await tempDir('launcher');
    certs = path.join(tmp.dir, 'certs');
    const made = await exec([process.execPath, ORION, 'certs', 'init', certs], { env: env({}) });
    expect(made.code, made.stderr).toBe(0);
    head = await startHeadProcess(path.join(tmp.dir, 'head'), [
      '--host', '127.0.0.1',
      '--tls-cert', path.join(certs, 'head.crt'),
      '--tls-key', path.join(certs, 'head.key'),
      '--tls-ca', path.join(certs, 'ca.crt'),
    ]);
  }, 60_000);

  afterAll(async () => {
    await head?.kill();
    await tmp?.cleanup();
  });

  it('keeps the file from Node start-up: no start-up warning for a missing file, which plain `node` prints', async () => {
    const missing = { NODE_EXTRA_CA_CERTS: path.join(tmp.dir, 'no-such-bundle.pem') };
    const viaNode = await exec([process.execPath, ORION, '--version'], { env: env(missing) });
    expect(viaNode.stderr).toMatch(/Ignoring extra certs/);
    const viaLauncher = await exec([ORION, '--version'], { env: env({ ...missing, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` }) });
    expect(viaLauncher.code, viaLauncher.stderr).toBe(0);
    expect(viaLauncher.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(viaLauncher.stderr).not.toMatch(/Ignoring extra certs/);
  });

  it('gives the commands of a build the environment it was given', async () => {
    const proj = path.join(tmp.dir, 'proj');
    await mkdir(proj, { recursive: true });
    await writeFile(path.join(proj, 'Makefile'), 'env.txt:\n\techo "$$NODE_EXTRA_CA_CERTS|$$ORION_NODE_EXTRA_CA_CERTS" > env.txt\n');
    const bundle = path.join(certs, 'ca.crt');
    const r = await exec([ORION, 'build', '--cache-dir', path.join(tmp.dir, 'cache')], { cwd: proj, env: env({ NODE_EXTRA_CA_CERTS: bundle, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` }) });
    expect(r.code, r.stderr).toBe(0);
    expect(await readFile(path.join(proj, 'env.txt'), 'utf8')).toBe(`${bundle}|\n`);
  });

  it('trusts a head whose CA is only in NODE_EXTRA_CA_CERTS when no --tls-ca is given, through the launcher or plain `node`', async () => {
    const args = ['status', '--head', head!.address, '--tls-cert', path.join(certs, 'admin.crt'), '--tls-key', path.join(certs, 'admin.key')];
    const PATH = `${path.dirname(process.execPath)}:${process.env.PATH}`;
    const trusted = await exec([ORION, ...args], { env: env({ NODE_EXTRA_CA_CERTS: path.join(certs, 'ca.crt'), PATH }) });
    expect(trusted.code, trusted.stderr).toBe(0);
    expect(trusted.stdout).toBe('no nodes registered\n');
    const viaNode = await exec([process.execPath, ORION, ...args], { env: env({ NODE_EXTRA_CA_CERTS: path.join(certs, 'ca.crt') }) });
    expect(viaNode.code, viaNode.stderr).toBe(0);
    const untrusted = await exec([ORION, ...args], { env: env({ NODE_EXTRA_CA_CERTS: undefined, PATH }) });
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stdout).toBe('');
  });

  it('starts `orion head` with a 16-thread libuv pool unless UV_THREADPOOL_SIZE is set and a 4 MB young generation, and leaves other commands alone', async () => {
    const PATH = `${path.dirname(process.execPath)}:${process.env.PATH}`;
    const started = async (extra: Record<string, string | undefined>, name: string) => {
      const child = spawn(ORION, ['head', '--host', '127.0.0.1', '--port', '0', '--data-dir', path.join(tmp.dir, name)], { env: env({ ...extra, PATH }) as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
      try {
        await new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', (b: Buffer) => /listening on/.test(b.toString()) && resolve());
          child.once('exit', (code) => reject(new Error(`head exited with ${code}`)));
        });
        const environ = (await readFile(`/proc/${child.pid}/environ`, 'utf8')).split('\0');
        const threads = (await readdir(`/proc/${child.pid}/task`)).length;
        const cmdline = (await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).split('\0');
        return { pool: environ.find((e) => e.startsWith('UV_THREADPOOL_SIZE='))?.split('=')[1], threads, cmdline };
      } finally {
        child.kill('SIGTERM');
      }
    };
    const byDefault = await started({ UV_THREADPOOL_SIZE: undefined }, 'pool-default');
    expect(byDefault.pool).toBe('16');
    // And a small young generation (the head's peak RSS): a flag on Node's own command line.
    expect(byDefault.cmdline.slice(1, 3)).toEqual(['--max-semi-space-size=4', ORION]);
    // The pool's threads are there beside the main thread and V8's own.
    expect(byDefault.threads).toBeGreaterThan(16);
    const chosen = await started({ UV_THREADPOOL_SIZE: '2' }, 'pool-chosen');
    expect(chosen.pool).toBe('2');
    expect(chosen.threads).toBeLessThan(byDefault.threads);

    const proj = path.join(tmp.dir, 'pool-proj');
    await mkdir(proj, { recursive: true });
    await writeFile(path.join(proj, 'Makefile'), 'pool.txt:\n\techo "[$$UV_THREADPOOL_SIZE]" > pool.txt\n');
    const r = await exec([ORION, 'build', '--cache-dir', path.join(tmp.dir, 'pool-cache')], { cwd: proj, env: env({ UV_THREADPOOL_SIZE: undefined, PATH }) });
    expect(r.code, r.stderr).toBe(0);
    expect(await readFile(path.join(proj, 'pool.txt'), 'utf8')).toBe('[]\n');
  });

  it('systemRoots: no extra file means grpc-js defaults; one is added to the bundled roots; an unreadable one is ignored', async () => {
    expect(systemRoots('')).toBeNull();
    const pem = await readFile(path.join(certs, 'ca.crt'), 'utf8');
    const roots = systemRoots(path.join(certs, 'ca.crt'))!.toString('utf8');
    expect(roots.endsWith(pem)).toBe(true);
    expect(roots).toContain(rootCertificates[0]!);
    expect(systemRoots(path.join(tmp.dir, 'missing.pem'))).toBeNull();
  });
});
