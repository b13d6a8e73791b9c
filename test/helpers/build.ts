/**
 * Helpers for the `orion build` end-to-end tests: run the real CLI as a
 * process, parse its progress and summary lines, copy fixtures to scratch
 * directories, and put logging wrappers around the toolchain.
 */
import { spawn } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { BuildAction, BuildGraph } from '../../dag-extractor/types.js';
import { ORION, REPO, startHeadProcess, startNodeProcess, waitForActiveNodes } from './daemons.js';

export const FIXTURES = path.join(REPO, 'fixtures');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment every spawned command gets: nothing from an enclosing orion or make leaks in. */
export function baseEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const k of ['ORION_HEAD', 'ORION_CACHE_DIR', 'MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'CFLAGS', 'CPPFLAGS', 'LDFLAGS', 'CC', 'CXX', 'GCC_COLORS']) delete env[k];
  Object.assign(env, extra);
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

/** Runs a command to completion, capturing stdout and stderr separately. */
export function run(argv: string[], opts: { cwd: string; env?: Record<string, string>; timeoutMs?: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: opts.env ?? baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout!.on('data', (d) => (stdout += d));
    proc.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 50_000);
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a shell command line; throws with its output when it fails. */
export async function sh(line: string, cwd: string, env?: Record<string, string>): Promise<RunResult> {
  const r = await run(['/bin/sh', '-c', line], { cwd, env });
  if (r.code !== 0) throw new Error(`\`${line}\` in ${cwd} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Runs `orion ARGS` (the built CLI) as a real process. */
export function orion(args: string[], opts: { cwd: string; env?: Record<string, string> }): Promise<RunResult> {
  return run([process.execPath, ORION, ...args], { cwd: opts.cwd, env: opts.env ?? baseEnv() });
}

export interface BuildRun extends RunResult {
  summary: Summary;
  lines: ProgressLine[];
}

/**
 * `orion build` in `dir`, with an explicit cache dir (and head, in cluster mode). With a head,
 * `--local-max 0` unless the test sets it: the fixtures are small enough that the default would
 * run their few misses here, and these tests are about the cluster.
 */
export async function orionBuild(dir: string, o: { cacheDir?: string; head?: string; args?: string[]; env?: Record<string, string> }): Promise<BuildRun> {
  const args = ['build'];
  if (o.cacheDir) args.push('--cache-dir', o.cacheDir);
  if (o.head) args.push('--head', o.head);
  if (o.head && !o.args?.includes('--local-max')) args.push('--local-max', '0');
  args.push(...(o.args ?? []));
  const r = await orion(args, { cwd: dir, env: o.env });
  return { ...r, summary: parseSummary(r.stderr), lines: parseProgress(r.stdout) };
}

export interface Summary {
  ok: boolean;
  total: number;
  run: number;
  /** Where executed actions ran: 'local' or a node id. */
  where: Record<string, number>;
  cached: number;
  fromCluster: number;
  /** Steps make would not run either (target newer than every prerequisite). */
  upToDate: number;
  failed: number;
  notRun: number;
  wouldRun: number;
}

const SUMMARY =
  /^orion: (build finished|build FAILED) in [\d.]+s: (\d+) actions, (\d+) run(?: \(([^)]*)\))?, (\d+) cached(?: \((\d+) from the cluster\))?(?:, (\d+) up to date)?(?:, (\d+) failed)?(?:, (\d+) not run)?(?:, (\d+) would run)?$/m;

/** Parses the summary line `orion build` prints on stderr. */
export function parseSummary(stderr: string): Summary {
  const m = SUMMARY.exec(stderr);
  if (!m) return { ok: false, total: -1, run: -1, where: {}, cached: -1, fromCluster: -1, upToDate: -1, failed: -1, notRun: -1, wouldRun: -1 };
  const where: Record<string, number> = {};
  for (const part of (m[4] ?? '').split(', ').filter(Boolean)) {
    const w = /^(\d+) on (.+)$/.exec(part);
    if (w) where[w[2]!] = Number(w[1]);
  }
  return {
    ok: m[1] === 'build finished',
    total: Number(m[2]),
    run: Number(m[3]),
    where,
    cached: Number(m[5]),
    fromCluster: Number(m[6] ?? 0),
    upToDate: Number(m[7] ?? 0),
    failed: Number(m[8] ?? 0),
    notRun: Number(m[9] ?? 0),
    wouldRun: Number(m[10] ?? 0),
  };
}

export type Tag = 'run' | 'cached' | 'cached (remote)' | 'FAILED' | 'skipped' | 'would run' | 'up to date';

export interface ProgressLine {
  label: string;
  tag: Tag;
}

/** The `[i/n] LABEL (tag)` lines on stdout. */
export function parseProgress(stdout: string): ProgressLine[] {
  const out: ProgressLine[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\[\d+\/\d+\] (.*)$/.exec(line);
    if (!m) continue;
    const t = / \((cached|cached \(remote\)|FAILED|skipped|would run|up to date)\)$/.exec(m[1]!);
    out.push(t ? { label: m[1]!.slice(0, t.index), tag: t[1] as Tag } : { label: m[1]!, tag: 'run' });
  }
  return out;
}

export const CACHEABLE_KINDS = new Set(['compile', 'archive', 'link', 'copy']);

/** Labels of compile/archive/link actions that ran (were not served from a cache). */
export function toolRuns(b: BuildRun, graph: BuildGraph): string[] {
  const tool = new Set(graph.actions.filter((a) => CACHEABLE_KINDS.has(a.kind)).map((a) => a.label));
  return b.lines.filter((l) => tool.has(l.label) && l.tag !== 'cached' && l.tag !== 'cached (remote)').map((l) => l.label).sort();
}

/** A directory under the system temp dir (physical path: make and the compiler see that one). */
export async function scratch(prefix: string): Promise<string> {
  return realpath(await mkdtemp(path.join(os.tmpdir(), `orion-${prefix}-`)));
}

/** A scratch directory made before the calling file's tests and removed after them: call it at the top level, read it in tests. */
export function scratchForFile(prefix: string): () => string {
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await scratch(prefix);
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (!dir) throw new Error('scratchForFile: read before the beforeAll hook ran');
    return dir;
  };
}

/** Copies fixtures/NAME to DEST (which must not exist yet). */
export async function copyFixture(name: string, dest: string): Promise<string> {
  await mkdir(path.dirname(dest), { recursive: true });
  await cp(path.join(FIXTURES, name), dest, { recursive: true });
  return dest;
}

/** `orion graph --format json` for DIR. */
export async function graphOf(dir: string, args: string[] = [], env?: Record<string, string>): Promise<BuildGraph> {
  const r = await orion(['graph', '--format', 'json', ...args], { cwd: dir, env });
  if (r.code !== 0) throw new Error(`orion graph failed in ${dir}: ${r.stderr}`);
  return JSON.parse(r.stdout) as BuildGraph;
}

/** Output files of the graph's compile/archive/link actions. */
export function toolOutputs(graph: BuildGraph): string[] {
  return [...new Set(graph.actions.filter((a) => CACHEABLE_KINDS.has(a.kind)).flatMap((a) => a.outputs))].sort();
}

export function actionByLabel(graph: BuildGraph, label: string): BuildAction {
  const a = graph.actions.find((x) => x.label === label);
  if (!a) throw new Error(`no action labelled ${label}; have ${graph.actions.map((x) => x.label).join(', ')}`);
  return a;
}

export async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Reads each existing file of `files` into a map (absolute path to bytes). */
export async function snapshot(files: string[]): Promise<Map<string, Buffer>> {
  const m = new Map<string, Buffer>();
  for (const f of files) {
    const b = await readFile(f).catch(() => undefined);
    if (b) m.set(f, b);
  }
  return m;
}

/** Recursively lists regular files under dir (relative paths). */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(path.join(d, e.name), r);
      else out.push(r);
    }
  };
  await walk(dir, '');
  return out.sort();
}

export const WRAPPED_TOOLS = ['cc', 'c++', 'gcc', 'g++', 'ar', 'ranlib'];

/**
 * Makes DIR hold wrappers for the toolchain: each appends its name and
 * arguments to $ORION_TEST_TOOL_LOG (when set) and then execs the real tool
 * in /usr/bin. With DIR first in PATH, every compiler, archiver or linker run
 * leaves a line in the log.
 */
export async function makeToolWrappers(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const t of WRAPPED_TOOLS) {
    const f = path.join(dir, t);
    await writeFile(
      f,
      `#!/bin/sh\nif [ -n "$ORION_TEST_TOOL_LOG" ]; then printf '%s %s\\n' '${t}' "$*" >> "$ORION_TEST_TOOL_LOG"; fi\nexec /usr/bin/${t} "$@"\n`,
    );
    await chmod(f, 0o755);
  }
  return dir;
}

export async function readLog(file: string): Promise<string> {
  return readFile(file, 'utf8').catch(() => '');
}

export async function removeAll(paths: string[]): Promise<void> {
  await Promise.all(paths.map((p) => rm(p, { recursive: true, force: true })));
}

/** Shell-quotes one word for /bin/sh. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface Cluster {
  address: string;
  /** How many actions the nodes have started so far (from their debug logs). */
  nodeRuns(): number;
  nodeIds: string[];
  stop(): Promise<void>;
}

/**
 * One real `orion head` and two real `orion node` processes (2 slots each),
 * nodes logging at debug level so every action they start is visible.
 */
export async function startCluster(dir: string): Promise<Cluster> {
  const head = await startHeadProcess(path.join(dir, 'head'), ['--heartbeat-timeout', '2s']);
  const nodeIds = ['n1', 'n2'];
  const nodes = nodeIds.map((id) => startNodeProcess(head.address, id, path.join(dir, id), ['--slots', '2', '--log-level', 'debug']));
  try {
    await waitForActiveNodes(head.address, 2);
  } catch (err) {
    for (const n of nodes) await n.kill('SIGKILL');
    await head.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\nhead:\n${head.output()}\nnodes:\n${nodes.map((n) => n.output()).join('\n')}`);
  }
  return {
    address: head.address,
    nodeIds,
    nodeRuns: () => nodes.reduce((n, d) => n + (d.output().match(/running action/g)?.length ?? 0), 0),
    async stop() {
      for (const n of nodes) await n.kill('SIGKILL');
      await head.kill('SIGKILL');
    },
  };
}
