/**
 * The end-to-end scenarios every fixture goes through, embedded (actions run
 * in place) and on a cluster (a real head and two real nodes). Each scenario
 * works on its own copy of the fixture at its own path: the project path is
 * part of every action key, so the head's action cache, which persists for
 * the whole file, never serves one scenario's results to another.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildGraph } from '../../dag-extractor/types.js';
import {
  CACHEABLE_KINDS,
  actionByLabel,
  baseEnv,
  copyFixture,
  exists,
  graphOf,
  listFiles,
  makeToolWrappers,
  orion,
  orionBuild,
  readLog,
  removeAll,
  run,
  scratch,
  snapshot,
  startCluster,
  toolOutputs,
  toolRuns,
  type BuildRun,
  type Cluster,
} from '../helpers/build.js';

export type Mode = 'embedded' | 'cluster';
export const MODES: Mode[] = ['embedded', 'cluster'];

export interface FixtureSpec {
  fixture: 'make-project' | 'cmake-project' | 'compdb-project';
  /** Builds the copy with the project's own tools, in place. */
  plainBuild(dir: string, env: Record<string, string>): Promise<void>;
  /**
   * For the byte-identical scenario: readies the copy, and the environment
   * both builds get, so that objects carry debug information (and with it
   * the source paths and compilation directories, which must then match).
   */
  debugInfo?: { prepare?(dir: string): Promise<void>; env?: Record<string, string> };
  /** Removes what the build produced (make clean, rm -rf build, ...). */
  clean(dir: string, graph: BuildGraph): Promise<void>;
  /** Files (relative to the project) every complete build produces. */
  products: string[];
  /** Runs the built programs and checks what they print. `variant` names the state of the sources. */
  checkPrograms(dir: string, variant: 'original' | 'header-edited'): Promise<void>;
  /**
   * Readies a fresh copy for the "no compiler runs" check so that compilers
   * run here go through the logging wrappers in `wrappers` (default: having
   * the wrappers first in PATH is enough).
   */
  useWrappers?(dir: string, wrappers: string, mode: Mode): Promise<void>;
  /** Whether, once useWrappers ran, some of the first build's compiles run here, through the wrappers. */
  wrappersSeeFirstBuild(mode: Mode): boolean;
  /** A header edit and exactly the compile/archive/link actions it must rerun. */
  headerEdit: { apply(dir: string): Promise<void>; rebuilt: string[] };
  /**
   * A further header edit (after headerEdit) for --explain: exactly the compiles `rebuilt` rerun,
   * and each must name `header` (relative to the root).
   */
  explainEdit: { header: string; apply(dir: string): Promise<void>; rebuilt: string[] };
  /**
   * The source to break and the compile that then fails; with -k, the files
   * built anyway, the files that must not exist, and how many actions do not run.
   */
  broken: { file: string; label: string; built: string[]; missing: string[]; notRun: number };
  /** Action kinds `orion graph` must show. */
  graphKinds: string[];
  /** Files outside which a dry run may write (cmake's configure writes its build directory). */
  dryRunMayWrite?: (rel: string) => boolean;
}

export async function edit(file: string, fn: (text: string) => string): Promise<void> {
  const before = await readFile(file, 'utf8');
  const after = fn(before);
  if (after === before) throw new Error(`edit of ${file} changed nothing`);
  await writeFile(file, after);
}

/** Removes the semicolon of the last statement before a closing brace: "error: expected ';' before '}' token". */
export function breakSyntax(text: string): string {
  const i = text.lastIndexOf(';\n}');
  if (i < 0) throw new Error('no statement to break');
  return text.slice(0, i) + text.slice(i + 1);
}

const SLOW = 120_000;

export function defineFixtureSuite(spec: FixtureSpec, extra?: (ctx: SuiteContext) => void): void {
  let base: string;
  let cluster: Cluster | undefined;
  let wrappers: string;
  /** The graph of an untouched copy: labels and kinds are the same in every copy. */
  let ref: BuildGraph;
  let seq = 0;

  beforeAll(async () => {
    base = await scratch(`build-${spec.fixture}`);
    wrappers = await makeToolWrappers(path.join(base, 'wrappers'));
    ref = await graphOf(await copyFixture(spec.fixture, path.join(base, 'reference', spec.fixture)));
    cluster = await startCluster(path.join(base, 'cluster'));
  }, SLOW);

  afterAll(async () => {
    await cluster?.stop();
    if (base) await removeAll([base]);
  }, SLOW);

  for (const mode of MODES) {
    describe(`${spec.fixture}, ${mode}`, () => {
      let incrementalDir: string | undefined;
      const incremental = () => {
        if (!incrementalDir) throw new Error('needs the copy the byte-identical scenario built');
        return incrementalDir;
      };

      const ctx: SuiteContext = {
        mode,
        /** A fresh copy of the fixture at a path no other scenario uses. */
        copy: async (what: string) => copyFixture(spec.fixture, path.join(base, `${mode}-${String(++seq).padStart(2, '0')}-${what}`, spec.fixture)),
        fresh: (what: string) => path.join(base, `${mode}-${String(++seq).padStart(2, '0')}-${what}`),
        cacheDir: (dir: string, name = 'cache') => path.join(path.dirname(dir), name),
        build: (dir, o = {}) =>
          orionBuild(dir, { cacheDir: o.cacheDir ?? path.join(path.dirname(dir), 'cache'), head: mode === 'cluster' ? cluster!.address : undefined, args: o.args, env: o.env }),
        cluster: () => cluster!,
        base: () => base,
        ref: () => ref,
        incremental: () => incremental(),
      };

      it('produces outputs byte-identical to the plain build in the same directory', async () => {
        const dir = await ctx.copy('incremental');
        await spec.debugInfo?.prepare?.(dir);
        const env = baseEnv(spec.debugInfo?.env);
        await spec.plainBuild(dir, env);
        const graph = await graphOf(dir);
        const outputs = toolOutputs(graph);
        const plain = await snapshot(outputs);
        for (const p of spec.products) expect(plain.has(path.join(dir, p)), `plain build produced ${p}`).toBe(true);
        // Debug information records where each compile ran: identical objects then mean identical paths.
        const objects = [...plain.keys()].filter((f) => f.endsWith('.o'));
        expect(objects.length).toBeGreaterThan(0);
        for (const o of objects) expect(plain.get(o)!.includes(dir), `${path.relative(dir, o)} records the project path`).toBe(true);
        await spec.clean(dir, graph);
        for (const p of spec.products) expect(await exists(path.join(dir, p)), `${p} removed by clean`).toBe(false);

        const b = await ctx.build(dir, { env });
        expectOk(b);
        expect(b.summary.cached).toBe(0);
        if (mode === 'cluster') expect(cluster!.nodeIds.some((n) => (b.summary.where[n] ?? 0) > 0), `some actions ran on the nodes: ${b.stderr}`).toBe(true);
        else expect(Object.keys(b.summary.where)).toEqual(['local']);
        const built = await snapshot(outputs);
        for (const [f, bytes] of plain) {
          expect(built.has(f), `orion build produced ${path.relative(dir, f)}`).toBe(true);
          expect(built.get(f)!.equals(bytes), `${path.relative(dir, f)} is byte-identical to the plain build's`).toBe(true);
        }
        await spec.checkPrograms(dir, 'original');
        incrementalDir = dir;
      }, SLOW);

      it('serves a second build entirely from the cache without running any compiler', async () => {
        const dir = await ctx.copy('second-build');
        const log1 = path.join(path.dirname(dir), 'tools-1.log');
        const log2 = path.join(path.dirname(dir), 'tools-2.log');
        const log3 = path.join(path.dirname(dir), 'tools-3.log');
        await spec.useWrappers?.(dir, wrappers, mode);
        // The wrappers are first in PATH for every build here, not just the second one:
        // the resolved tool (its path and content digest) is part of each action's key,
        // so putting them in PATH only for the second build would make every action a
        // miss. With the same PATH throughout, the keys match and the wrappers' log
        // shows whether a compiler, archiver or linker ran here. On the cluster the
        // nodes' own logs show whether anything ran there, and the wrappers stay out of PATH:
        // a node runs only the compiler the key names, and the nodes have no such wrappers
        // (node/tool-check.ts); the builds' own reports tell what ran here.
        const env = (log: string) => (mode === 'cluster' ? baseEnv() : baseEnv({ PATH: `${wrappers}:${process.env.PATH}`, ORION_TEST_TOOL_LOG: log }));
        const graph = ref;
        const tools = graph.actions.filter((a) => CACHEABLE_KINDS.has(a.kind));
        const others = graph.actions.length - tools.length;

        const runsBefore = cluster?.nodeRuns() ?? 0;
        const first = await ctx.build(dir, { env: env(log1) });
        expectOk(first);
        // The checks below would prove nothing if the first build's tools were invisible to them.
        if (spec.wrappersSeeFirstBuild(mode)) expect(await readLog(log1), 'the wrappers saw the first build compile').toMatch(/^(cc|c\+\+) .*-c /m);
        if (mode === 'cluster') expect(cluster!.nodeRuns(), 'the nodes ran the first build').toBeGreaterThan(runsBefore);

        const runsAfterFirst = cluster?.nodeRuns() ?? 0;
        const second = await ctx.build(dir, { env: env(log2) });
        expectOk(second);
        expect(second.summary.total).toBe(graph.actions.length);
        // Only steps that are not compiles, archives or links (SH, GEN) may run again, and only here.
        expect(second.summary.cached).toBeGreaterThanOrEqual(tools.length);
        expect(second.summary.fromCluster).toBe(0);
        expect(second.summary.run).toBeLessThanOrEqual(others);
        for (const w of Object.keys(second.summary.where)) expect(w).toBe('local');
        expect(toolRuns(second, graph)).toEqual([]);
        expect(second.lines.filter((l) => l.tag === 'cached').map((l) => l.label).sort()).toEqual(tools.map((a) => a.label).sort());
        expect(await readLog(log2), 'no compiler, archiver or linker ran').toBe('');
        expect(cluster?.nodeRuns() ?? 0, 'no action ran on a node').toBe(runsAfterFirst);
        await spec.checkPrograms(dir, 'original');

        if (mode === 'cluster') {
          // A cold local cache at the same path: whatever ran on the nodes comes from the
          // head's cache. Actions with outputs outside their directory cannot run remotely
          // (REAPI output paths are relative to it); they ran here, so the head never had them.
          const third = await ctx.build(dir, { env: env(log3), cacheDir: ctx.cacheDir(dir, 'cold-cache') });
          expectOk(third);
          const remotable = tools.filter((a) => a.outputs.every((o) => o.startsWith(`${a.cwd}/`)));
          const localOnly = tools.filter((a) => !remotable.includes(a)).map((a) => a.label).sort();
          expect(remotable.length).toBeGreaterThan(0);
          expect(third.summary.fromCluster).toBe(remotable.length);
          expect(third.lines.filter((l) => l.tag === 'cached (remote)').map((l) => l.label).sort()).toEqual(remotable.map((a) => a.label).sort());
          expect(toolRuns(third, graph)).toEqual(localOnly);
          expect(cluster!.nodeRuns(), 'no action ran on a node').toBe(runsAfterFirst);
          await spec.checkPrograms(dir, 'original');
        }
      }, SLOW);

      // The next three scenarios continue on the copy the first one built (fully cached by then).
      it('rebuilds nothing after an unrelated file changes', async () => {
        const dir = incremental();
        await writeFile(path.join(dir, 'notes.txt'), 'nothing to do with the build\n');
        if (await exists(path.join(dir, 'README.md'))) await edit(path.join(dir, 'README.md'), (t) => t + '\nMore words.\n');
        const b = await ctx.build(dir);
        expectOk(b);
        expect(toolRuns(b, ref)).toEqual([]);
        const tools = ref.actions.filter((a) => CACHEABLE_KINDS.has(a.kind)).map((a) => a.label);
        expect(b.lines.filter((l) => l.tag === 'cached' && tools.includes(l.label)).length).toBe(tools.length);
      }, SLOW);

      it('reruns exactly the compiles that read an edited header, and the links above them', async () => {
        const dir = incremental();
        await spec.headerEdit.apply(dir);
        const b = await ctx.build(dir);
        expectOk(b);
        expect(toolRuns(b, ref)).toEqual([...spec.headerEdit.rebuilt].sort());
        await spec.checkPrograms(dir, 'header-edited');
      }, SLOW);

      it('--explain names the edited header for each compile it reruns', async () => {
        const dir = incremental();
        await spec.explainEdit.apply(dir);
        const b = await ctx.build(dir, { args: ['--explain'] });
        expectOk(b);
        const rerun = toolRuns(b, ref).filter((l) => actionByLabel(ref, l).kind === 'compile');
        expect(rerun.sort()).toEqual([...spec.explainEdit.rebuilt].sort());
        const explained = new Map<string, string>();
        for (const m of b.stdout.matchAll(/^explain: (.*?): (.*)$/gm)) explained.set(m[1]!, m[2]!);
        for (const label of rerun) {
          expect(explained.get(label), `explain line for ${label}`).toBeDefined();
          expect(explained.get(label)!.split(', ')).toContain(`${spec.explainEdit.header} changed`);
        }
        // Actions served from the cache have no explain line.
        for (const l of b.lines.filter((x) => x.tag === 'cached')) expect(explained.has(l.label)).toBe(false);
        await spec.checkPrograms(dir, 'header-edited');
      }, SLOW);

      // Scenarios 5 and 6 share one copy: -k first, on the fresh copy, then the same error without -k.
      let broken: { dir: string; original: string } | undefined;

      it('builds everything independent of a broken file with -k, and still fails', async () => {
        const dir = await ctx.copy('broken');
        const original = await readFile(path.join(dir, spec.broken.file), 'utf8');
        await writeFile(path.join(dir, spec.broken.file), breakSyntax(original));
        const b = await ctx.build(dir, { args: ['-k'] });
        expect(b.code, b.stderr).toBe(2);
        expect(b.summary.ok).toBe(false);
        expect(b.summary.failed).toBe(1);
        expect(b.summary.notRun).toBe(spec.broken.notRun);
        expect(b.lines.find((l) => l.label === spec.broken.label)?.tag).toBe('FAILED');
        for (const f of spec.broken.built) expect(await exists(path.join(dir, f)), `${f} built despite the failure`).toBe(true);
        for (const f of spec.broken.missing) expect(await exists(path.join(dir, f)), `${f} not built`).toBe(false);
        broken = { dir, original };
      }, SLOW);

      it("fails on a syntax error with the compiler's own diagnostic, then succeeds once it is fixed", async () => {
        if (!broken) throw new Error('needs the copy the -k scenario broke');
        const { dir, original } = broken;
        const b = await ctx.build(dir);
        expect(b.code, b.stderr).toBe(2);
        expect(b.summary.ok).toBe(false);
        expect(b.summary.failed).toBe(1);
        expect(b.lines.find((l) => l.label === spec.broken.label)?.tag).toBe('FAILED');
        const graph = await graphOf(dir);
        const action = actionByLabel(graph, spec.broken.label);
        for (const o of action.outputs.filter((f) => /\.(o|obj)$/.test(f))) expect(await exists(o), `${o} was not produced`).toBe(false);
        // The same compile, run here by hand, prints the diagnostic orion must show verbatim.
        const local = await run(action.argv, { cwd: action.cwd });
        expect(local.code).not.toBe(0);
        const where = path.basename(spec.broken.file).replace(/[.+]/g, '\\$&');
        // GCC quotes with ‘’ or '' depending on the locale.
        expect(local.stderr).toMatch(new RegExp(`${where}:\\d+:\\d+: error: expected [‘']?;[’']? before`));
        expect(b.stderr).toContain(local.stderr);
        await removeAll(action.outputs);

        await writeFile(path.join(dir, spec.broken.file), original);
        const fixed = await ctx.build(dir);
        expectOk(fixed);
        for (const p of spec.products) expect(await exists(path.join(dir, p)), `${p} built`).toBe(true);
        await spec.checkPrograms(dir, 'original');
      }, SLOW);

      it('--dry-run runs nothing; orion graph prints the graph as JSON and as dot', async () => {
        const dir = await ctx.copy('dry-run');
        const before = await listFiles(dir);
        const b = await ctx.build(dir, { args: ['--dry-run'] });
        expectOk(b);
        expect(b.summary.run).toBe(0);
        expect(b.summary.wouldRun).toBe(b.summary.total);
        expect(b.lines.length).toBe(b.summary.total);
        for (const l of b.lines) expect(l.tag).toBe('would run');
        const after = await listFiles(dir);
        const may = spec.dryRunMayWrite ?? (() => false);
        expect(after.filter((f) => !may(f))).toEqual(before);
        if (mode === 'cluster') expect(cluster!.nodeIds.every((n) => !(n in b.summary.where))).toBe(true);

        const json = await orion(['graph', '--format', 'json'], { cwd: dir });
        expect(json.code).toBe(0);
        const graph = JSON.parse(json.stdout) as BuildGraph;
        expect(graph.root).toBe(dir);
        expect(graph.actions.length).toBe(b.summary.total);
        for (const k of spec.graphKinds) expect(graph.actions.some((a) => a.kind === k), `graph has a ${k} action`).toBe(true);
        for (const o of toolOutputs(graph)) expect(await exists(o), `${o} not created by the dry run`).toBe(false);
        const dot = await orion(['graph', '--format', 'dot'], { cwd: dir });
        expect(dot.code).toBe(0);
        expect(dot.stdout.trimStart()).toMatch(/^digraph\b/);
        expect(dot.stdout.trimEnd().endsWith('}')).toBe(true);
        for (const a of graph.actions) expect(dot.stdout).toContain(a.label.replace(/"/g, '\\"'));
        const edges = graph.actions.reduce((n, a) => n + a.deps.length, 0);
        if (edges > 0) expect(dot.stdout).toContain('->');
      }, SLOW);

      extra?.(ctx);
    });
  }
}

export interface SuiteContext {
  mode: Mode;
  copy(what: string): Promise<string>;
  /** A fresh directory path (not created) for a scenario's own project. */
  fresh(what: string): string;
  cacheDir(dir: string, name?: string): string;
  build(dir: string, o?: { cacheDir?: string; args?: string[]; env?: Record<string, string> }): Promise<BuildRun>;
  cluster(): Cluster;
  base(): string;
  /** The graph of an untouched copy of the fixture (for labels and kinds). */
  ref(): BuildGraph;
  /** The copy the byte-identical scenario built, after the unrelated, header and --explain edits (all cached). */
  incremental(): string;
}

export function expectOk(b: BuildRun): void {
  expect(b.code, `orion build failed:\n${b.stdout}\n${b.stderr}`).toBe(0);
  expect(b.summary.ok, b.stderr).toBe(true);
}
