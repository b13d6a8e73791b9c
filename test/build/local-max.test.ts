/**
 * `orion build --head --local-max N`: when at most N misses wait for the cluster (a wave: everything
 * else that could run here has), they run here (in place, as without a head); a larger wave, or
 * N = 0, goes to the cluster. A real head and two real nodes; the Make fixture.
 */
import { createHash } from 'node:crypto';
import { appendFile, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, copyFixture, orionBuild, scratch, startCluster, type BuildRun, type Cluster } from '../helpers/build.js';
import { RACY_WINDOW_MS } from '../../cas/stat-cache.js';

const OUTPUTS = ['src/calc.o', 'calc', 'src/hello.o', 'hello', 'lib/libutil.a'];

async function hashes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of OUTPUTS) out[f] = createHash('sha256').update(await readFile(path.join(dir, f))).digest('hex');
  return out;
}

const onNodes = (b: BuildRun) => Object.entries(b.summary.where).filter(([w]) => w !== 'local').reduce((n, [, k]) => n + k, 0);

describe('orion build --head --local-max', () => {
  let base: string;
  let cluster: Cluster;
  let dir: string;

  beforeAll(async () => {
    base = await scratch('local-max');
    cluster = await startCluster(path.join(base, 'cluster'));
    dir = await copyFixture('make-project', path.join(base, 'proj'));
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('runs an edit\'s few actions here when at most --local-max are left, on the cluster otherwise; the outputs are the same', async () => {
    const env = baseEnv();
    const head = cluster.address;
    const cache = path.join(base, 'cache');
    const cold = await orionBuild(dir, { cacheDir: cache, head, args: ['--local-max', '0'], env });
    expect(cold.code, cold.stderr).toBe(0);
    expect(onNodes(cold)).toBeGreaterThan(0);

    // One .c edited: its compile misses (a wave of one), then the link above it (another wave of one).
    await appendFile(path.join(dir, 'src/calc.c'), '\nint orion_local_max_probe(void) { return 7; }\n');
    const nodeRuns = cluster.nodeRuns();
    const here = await orionBuild(dir, { cacheDir: cache, head, args: ['--local-max', '2'], env });
    expect(here.code, here.stderr).toBe(0);
    expect(here.summary.where).toEqual({ local: here.summary.run });
    expect(here.lines.find((l) => l.label === 'CC src/calc.o')?.tag).not.toBe('cached');
    expect(here.stderr).toMatch(/ran 0 remotely/);
    expect(cluster.nodeRuns()).toBe(nodeRuns);
    const local = await hashes(dir);

    // The same tree on the cluster (a fresh local cache; the head never saw this edit): the same bytes.
    const remote = await orionBuild(dir, { cacheDir: path.join(base, 'cache-2'), head, args: ['--local-max', '0'], env });
    expect(remote.code, remote.stderr).toBe(0);
    expect(onNodes(remote)).toBeGreaterThan(0);
    expect(await hashes(dir)).toEqual(local);

    // A header six compiles read, edited: a first wave of six misses, more than --local-max 2, so the cluster runs them.
    await appendFile(path.join(dir, 'include/util.h'), '\nint orion_local_max_decl(void);\n');
    const before = cluster.nodeRuns();
    const sent = await orionBuild(dir, { cacheDir: cache, head, args: ['--local-max', '2'], env });
    expect(sent.code, sent.stderr).toBe(0);
    expect(onNodes(sent), sent.stderr).toBeGreaterThanOrEqual(6);
    expect(cluster.nodeRuns()).toBeGreaterThan(before);
    expect(sent.lines.find((l) => l.label === 'CC src/calc.o')?.tag).not.toBe('cached');
  }, 120_000);

  it('starts an edited file\'s compile here at once, while the cache hits are still looked up', async () => {
    const env = baseEnv();
    const cache = path.join(base, 'cache-4');
    const first = await orionBuild(dir, { cacheDir: cache, head: cluster.address, args: ['--local-max', '0'], env });
    expect(first.code, first.stderr).toBe(0);
    // Files modified moments before they are hashed are hashed again next time (racy stat): let them age.
    await new Promise((r) => setTimeout(r, RACY_WINDOW_MS + 200));
    await appendFile(path.join(dir, 'lib/add.c'), '\nint orion_local_max_early(void) { return 9; }\n');
    const trace = path.join(base, 'early.json');
    const b = await orionBuild(dir, { cacheDir: cache, head: cluster.address, args: ['--local-max', '2', '-j', '2', '--profile', trace], env });
    expect(b.code, b.stderr).toBe(0);
    type Event = { ph: string; ts: number; name: string; cat?: string; args?: { where?: string } };
    const events = (JSON.parse(await readFile(trace, 'utf8')) as { traceEvents: Event[] }).traceEvents.filter((e) => e.ph === 'X');
    const compile = events.find((e) => e.name === 'CC lib/add.o' && e.cat === 'compile');
    const lookups = events.filter((e) => e.cat === 'cache');
    expect(compile, 'the edited compile ran').toBeDefined();
    expect(compile!.args?.where).toBe('local');
    expect(lookups.length).toBeGreaterThan(3);
    // Without the early start it would wait for every lookup (the wave is weighed once all are done).
    for (const l of lookups) expect(l.ts, `${l.name} started before the edited compile`).toBeGreaterThanOrEqual(compile!.ts);
  }, 120_000);

  it('rejects a --local-max that is not a whole number, naming the option', async () => {
    const r = await orionBuild(dir, { cacheDir: path.join(base, 'cache-3'), head: cluster.address, args: ['--local-max', '-1'], env: baseEnv() });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--local-max/);
  });
});
