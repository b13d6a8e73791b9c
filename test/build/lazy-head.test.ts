/**
 * `orion build --head` connects on first use: a build the local cache serves
 * whole never loads gRPC or reaches for the head (a head that is not there
 * fails the first action that needs it: test/integration/head-restart.test.ts).
 */
import path from 'node:path';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lazyHeadConnection } from '../../cli/build/lazy-head.js';
import { Code, OrionError, isFatal } from '../../common/errors.js';
import type { HeadConnection } from '../../cli/build/head-connection.js';
import { baseEnv, copyFixture, orionBuild, run, scratch } from '../helpers/build.js';
import { closedPort, ORION } from '../helpers/daemons.js';

/** A loader whose connection records calls, and counts how often it was loaded; `ready` resolves or rejects as given. */
function fakeLoader(ready: () => Promise<void> = async () => undefined) {
  const calls: string[] = [];
  let loads = 0;
  const connection: HeadConnection = {
    remoteExecutor: {
      run: async () => {
        calls.push('run');
        throw new Error('not used');
      },
      uploadedBytes: () => 42,
      uploadTree: async () => {
        calls.push('uploadTree');
        return { hash: 'a'.repeat(64), sizeBytes: 1 };
      },
      ensure: async () => [],
      close: () => void calls.push('close executor'),
    },
    remoteCache: {
      get: async () => {
        calls.push('get');
        return undefined;
      },
      fetch: async () => undefined,
    },
    dagClient: {
      submit: () => {
        calls.push('submit');
        return { accepted: Promise.resolve('b1'), finished: Promise.resolve({ ok: true, executed: 0, cacheHits: 0, failed: 0, skipped: 0, peerBytes: 0, headBytes: 0 } as never) };
      },
      report: async () => void calls.push('report'),
      prefetch: async () => {
        calls.push('prefetch');
        return 2;
      },
      close: () => void calls.push('close dag'),
    },
    prefetchTree: async () => {
      calls.push('prefetchTree');
      return 3;
    },
    ready: async ({ timeoutMs }) => {
      calls.push(`ready ${timeoutMs}`);
      return ready();
    },
    close: () => void calls.push('close'),
  };
  const load = async () => {
    loads++;
    return { connectToHead: () => connection } as unknown as typeof import('../../cli/build/head-connection.js');
  };
  return { calls, load, loads: () => loads };
}

const OPTIONS = { head: '127.0.0.1:1', auth: {}, dag: true, buildId: 'b', actions: () => [], localCas: undefined as never, files: undefined as never, meter: { read() {}, written() {} }, onStage() {} };

describe('lazyHeadConnection', () => {
  it('loads and connects on the first call only, then delegates; closing before any use connects nothing', async () => {
    const f = fakeLoader();
    const head = lazyHeadConnection(OPTIONS, f.load);
    expect(f.loads()).toBe(0);
    expect(head.remoteExecutor.uploadedBytes()).toBe(0);
    expect(await head.remoteCache.get(undefined as never)).toBeUndefined();
    const run = head.dagClient!.submit(undefined as never, () => {}, new AbortController().signal);
    expect(await run.accepted).toBe('b1');
    await head.remoteExecutor.uploadTree();
    expect(await head.prefetchTree!(undefined as never, new AbortController().signal)).toBe(3);
    expect(await head.dagClient!.prefetch(undefined as never)).toBe(2);
    expect(f.loads()).toBe(1);
    expect(f.calls).toEqual(['ready 15000', 'get', 'submit', 'uploadTree', 'prefetchTree', 'prefetch']);
    expect(head.remoteExecutor.uploadedBytes()).toBe(42);
    head.close();
    expect(f.calls.at(-1)).toBe('close');

    const idle = fakeLoader();
    lazyHeadConnection(OPTIONS, idle.load).close();
    expect(idle.loads()).toBe(0);
  });

  it('waits for the head once; a head that never answered fails every use with the same fatal error, and nothing is sent', async () => {
    const unreachable = new OrionError(Code.UNAVAILABLE, 'cannot reach the head at 127.0.0.1:1: no answer in 2 s', { fatal: true });
    let asked = 0;
    const f = fakeLoader(async () => {
      asked++;
      throw unreachable;
    });
    const head = lazyHeadConnection({ ...OPTIONS, connectTimeoutMs: 2_000 }, f.load);
    const uses = [
      head.remoteCache.get(undefined as never),
      head.remoteExecutor.run(undefined as never, undefined as never, new AbortController().signal),
      head.dagClient!.submit(undefined as never, () => {}, new AbortController().signal).accepted,
      head.remoteExecutor.uploadTree(),
      head.ready(),
    ];
    for (const u of uses) await expect(u).rejects.toBe(unreachable);
    expect(isFatal(unreachable)).toBe(true);
    expect(asked).toBe(1);
    expect(f.loads()).toBe(1);
    expect(f.calls).toEqual(['ready 2000']);
  });

  it('has no DAG client with --no-dag', () => {
    const head = lazyHeadConnection({ ...OPTIONS, dag: false }, fakeLoader().load);
    expect(head.dagClient).toBeUndefined();
    expect(head.prefetchTree).toBeUndefined();
  });
});

describe('orion build --head with a warm local cache', () => {
  let dir: string;
  let cache: string;

  beforeAll(async () => {
    const base = await scratch('lazy-head');
    dir = await copyFixture('make-project', path.join(base, 'proj'));
    cache = path.join(base, 'cache');
  });

  afterAll(async () => {
    if (dir) await rm(path.dirname(dir), { recursive: true, force: true });
  });

  it('is served from the local cache without reaching the head (none listens there)', async () => {
    const local = await orionBuild(dir, { cacheDir: cache, env: baseEnv() });
    expect(local.code, local.stderr).toBe(0);
    const head = `127.0.0.1:${await closedPort()}`;
    await rm(path.join(dir, 'hello'));
    // Records whether the process loaded Node's http2 module (what gRPC runs on).
    const preload = path.join(path.dirname(dir), 'http2-probe.cjs');
    const probe = path.join(path.dirname(dir), 'http2-loaded');
    await writeFile(preload, `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(probe)}, String(process.moduleLoadList.some((m) => / http2$/.test(m)))));\n`);
    const env = baseEnv({ NODE_OPTIONS: `--require ${preload}` });
    const warm = await orionBuild(dir, { cacheDir: cache, head, env });
    expect(warm.code, warm.stdout + warm.stderr).toBe(0);
    // Only a step ran (here, as always); every compile and link came from the local cache.
    expect(warm.stderr).toMatch(/ran 0 remotely, \d+ locally, 11 from cache/);
    expect(warm.lines.find((l) => l.label === 'LD hello')?.tag).toBe('cached');
    expect(await readFile(probe, 'utf8'), 'gRPC was loaded').toBe('false');
    // The probe sees it when it is loaded: `orion status` talks to the head at once.
    const status = await run([process.execPath, ORION, 'status', '--head', head], { cwd: dir, env });
    expect(status.code).toBe(1);
    expect(await readFile(probe, 'utf8')).toBe('true');
    expect(warm.stderr).not.toMatch(/cannot reach/);
  });
});
