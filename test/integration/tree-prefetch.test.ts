/**
 * Builds.Prefetch end to end: `orion build --head` on a tree it has not seen sends
 * the tree to the head while make's dry run runs, and the head's nodes fetch it
 * before the DAG arrives. Real head, real nodes, real compilers, real gRPC.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFixture, orionBuild, run, scratch } from '../helpers/build.js';
import { startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';

const FIXTURE_FILES = ['Makefile', 'VERSION', 'include/util.h', 'lib/Makefile', 'lib/add.c', 'lib/fmt.c', 'lib/strutil.c', 'scripts/gen-version.sh', 'src/calc.c', 'src/hello.c', 'tools/Makefile', 'tools/wordstat.c'];
const HELLO = 'HELLO FROM THE ORION MAKE FIXTURE (version 1.4.2)\nwords: 6\n';

/** The JSON log lines of a daemon that carry `msg`. */
function logged(d: Daemon, msg: string): Record<string, unknown>[] {
  return d
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}

describe('the tree is fetched by the nodes ahead of the DAG', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  const nodes: Daemon[] = [];

  beforeAll(async () => {
    tmp = await tempDir('tree-prefetch');
    head = await startHeadProcess(path.join(tmp.dir, 'head'));
    for (const id of ['p1', 'p2']) nodes.push(startNodeProcess(head.address, id, path.join(tmp.dir, id), ['--slots', '1', '--log-level', 'debug']));
    await waitForActiveNodes(head.address, 2);
  });

  afterAll(async () => {
    for (const n of nodes) await n.kill();
    await head?.kill();
    await tmp?.cleanup();
  });

  it('on a new tree: each node fetches it once, the build is right and counts those bytes; a tree that only lost files sends nothing ahead', async () => {
    const base = await scratch('prefetch-make');
    try {
      const dir = await copyFixture('make-project', path.join(base, 'proj'));
      const cache = path.join(base, 'cache');
      const b = await orionBuild(dir, { head: head.address, cacheDir: cache, args: ['-v'] });
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr).toMatch(/^orion: sent the tree to the head in \d+ ms; 2 node\(s\) fetch it ahead of the build$/m);
      const buildId = /^orion: build (\S+) on /m.exec(b.stderr)![1];
      // Each node fetched that tree once, for that build, before or while its actions ran there.
      for (const n of nodes) {
        const done = await waitFor('the node to log its prefetch', () => (logged(n, 'prefetched a tree').length > 0 ? logged(n, 'prefetched a tree') : undefined));
        expect(done.map((l) => l.buildId)).toEqual([buildId]);
      }
      // Both nodes ran some of it (one slot each), so each counted its prefetch with its first action.
      expect(Object.keys(b.summary.where)).toEqual(expect.arrayContaining(['p1', 'p2']));
      expect((await run(['./hello'], { cwd: dir })).stdout).toBe(HELLO);
      // The bytes a node prefetched (the whole tree: it had none of it) are counted with the first
      // action of the build it ran, so the build's figure of what nodes read from the head has them.
      const tree = (await Promise.all(FIXTURE_FILES.map((f) => readFile(path.join(dir, f))))).reduce((n, x) => n + x.length, 0);
      for (const n of nodes) {
        const prefetched = Number(logged(n, 'prefetched a tree')[0]!.headBytes);
        expect(prefetched).toBeGreaterThanOrEqual(tree);
        const first = logged(n, 'action finished').find((l) => l.buildId === buildId)!;
        expect(Number(first.headBytes)).toBeGreaterThanOrEqual(prefetched);
      }
      expect(b.stderr).toMatch(/^orion: nodes fetched .+ of inputs from each other and .+ from the head$/m);

      // Outputs removed, no content changed: the graph is extracted again (its file listing
      // changed) but nothing new is sent ahead; the local cache serves the build.
      await rm(path.join(dir, 'hello'));
      const again = await orionBuild(dir, { head: head.address, cacheDir: cache, args: ['-v'] });
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).not.toMatch(/sent the tree to the head/);
      expect((await run(['./hello'], { cwd: dir })).stdout).toBe(HELLO);
      for (const n of nodes) expect(logged(n, 'prefetched a tree')).toHaveLength(1);

      // A source edited and a file added (new content, new listing: a pull): the tree is sent again.
      await writeFile(path.join(dir, 'src/calc.c'), `${await readFile(path.join(dir, 'src/calc.c'), 'utf8')}\n/* edited */\n`);
      await writeFile(path.join(dir, 'NOTES'), 'new file\n');
      const edited = await orionBuild(dir, { head: head.address, cacheDir: cache, args: ['-v'] });
      expect(edited.code, edited.stderr).toBe(0);
      expect(edited.stderr).toMatch(/sent the tree to the head/);
      for (const n of nodes) await waitFor('the second prefetch', () => logged(n, 'prefetched a tree').length === 2);
      expect((await run(['./hello'], { cwd: dir })).stdout).toBe(HELLO);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  }, 120_000);
});
