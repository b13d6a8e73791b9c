import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { Code, OrionError } from '../../common/errors.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { DEFAULT_KEEP_MS, METADATA_KEEP_MS, METADATA_TOUCH_MS, touchAfterFor, trimDiskStoreIfDue, trimUnusedFiles } from '../../cas/store-trim.js';
import { createDiskActionCache } from '../../cas/disk-action-cache.js';
import { createCompletenessCheckingActionCache } from '../../cas/complete-action-cache.js';
import { createStatCache } from '../../cas/stat-cache.js';
import { createProcessRunner } from '../../sandbox/runner.js';
import { runBuild, type BuildSummary } from '../build/build-runner.js';
import type { ClientAuthOptions } from '../../common/credentials.js';
import type { HeadConnection } from '../build/head-connection.js';
import { loadDepManifest } from '../build/dep-manifest.js';
import { loadOrExtractGraph } from '../build/graph-cache.js';
import { createIncludeScanner, loadDirectiveStore } from '../build/include-scanner.js';
import { createInPlaceExecutor } from '../build/in-place-executor.js';
import { loadKeyHistory } from '../build/key-history.js';
import { loadTreeMemo } from '../build/tree-memo.js';
import { createProjectFiles, type ProjectFiles } from '../build/project-files.js';
import { createPlainReporter, type Sink } from '../build/reporter.js';
import { createToolResolver } from '../../common/tool-resolver.js';
import { createDiskStepCache } from '../build/step-cache.js';
import type { BuildAction, BuildGraph } from '../../dag-extractor/types.js';
import { writeFile } from 'node:fs/promises';
import { newBuildId } from '../build/build-id.js';
import { lazyHeadConnection } from '../build/lazy-head.js';
import { buildReport } from '../build/build-report.js';
import { fanOutReporter } from '../build/fan-out-reporter.js';
import { createCostEstimate } from '../build/cost-estimate.js';
import { createTimeline } from '../build/timeline.js';
import { createTtyReporter } from '../build/tty-reporter.js';
import { gitIdentity } from '../build/git-identity.js';

export interface BuildCommandOptions {
  dir: string;
  args: string[];
  head?: string;
  /** TLS files and bearer-token file for the head (ORION_TOKEN otherwise). */
  auth?: ClientAuthOptions;
  cacheDir: string;
  jobs?: number;
  keepGoing: boolean;
  dryRun: boolean;
  explain: boolean;
  /** With a head: submit the whole DAG to its Builds service (default), falling back to one Execute per action. */
  dag?: boolean;
  /** With a head: misses run here while at most this many wait for the cluster at once (default: CPU cores; 0: never). */
  localMax?: number;
  /** With a head: how long its first use waits for it to answer before the build fails (default 15 s). */
  connectTimeoutMs?: number;
  /** Bytes of disk the local cache's CAS may use (default DEFAULT_CACHE_BYTES). */
  cacheMaxBytes?: number;
  quiet: boolean;
  verbose: boolean;
  buildDir?: string;
  /** Set when stdout is a terminal: a live status line instead of one line per action. */
  tty?: { columns: () => number };
  /** Write a Chrome trace-event file (Perfetto, chrome://tracing) here. */
  profile?: string;
}

export function defaultCacheDir(env: Record<string, string | undefined>): string {
  return env.ORION_CACHE_DIR || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'orion');
}

/** Runs `orion build`; resolves to the build summary (the caller sets the exit code). */
export async function runBuildCommand(o: BuildCommandOptions, sink: Sink, signal: AbortSignal): Promise<BuildSummary> {
  const started = Date.now();
  const root = path.resolve(o.dir);
  const env = process.env as Record<string, string>;
  const projectKey = createHash('sha256').update(root).digest('hex').slice(0, 16);
  const statCache = createStatCache(path.join(o.cacheDir, 'stat', `${projectKey}.json`));
  const files = createProjectFiles(root, statCache);
  // Each blob found here again has its mtime set (at most every 10 minutes): trims keep what builds use.
  const localCas = createDiskBlobStore(path.join(o.cacheDir, 'cas'), { durable: false, touchAfterMs: touchAfterFor(DEFAULT_KEEP_MS) });
  const timeline = createTimeline();
  const shown = o.tty && !o.quiet ? createTtyReporter(sink, { verbose: o.verbose, root, columns: o.tty.columns }) : createPlainReporter(sink, { quiet: o.quiet, verbose: o.verbose, root });
  const reporter = fanOutReporter(shown, timeline);
  // With a head: a build id on every request (the head groups work by it), the bytes moved, where actions run.
  const buildId = o.head ? newBuildId() : undefined;
  const bytes = { uploaded: 0, downloaded: 0 };
  const meter = { read: (n: number) => void (bytes.downloaded += n), written: (n: number) => void (bytes.uploaded += n) };
  const onStage = (a: BuildAction, stage: 'queued' | 'executing', worker?: string) => reporter.running?.(a, stage === 'executing' ? (worker ?? 'remote') : 'remote');
  if (buildId && o.verbose) sink.stderr(`orion: build ${buildId} on ${o.head}\n`);
  const estimate = createCostEstimate();
  const jobs = o.jobs ?? (o.head ? 64 : os.availableParallelism());
  let graph: BuildGraph | undefined;
  // gRPC is loaded and the head connected on first use: a build the local cache serves
  // whole (a warm CI checkout, a no-op) never waits for either.
  const head: HeadConnection | undefined = o.head && buildId ? lazyHeadConnection({ head: o.head, auth: o.auth ?? {}, dag: o.dag !== false, buildId, actions: () => graph?.actions ?? [], estimate, localCas, files, meter, onStage, connectTimeoutMs: o.connectTimeoutMs, signal, onWaiting: (reason) => void (o.quiet || sink.stderr(`orion: no answer from the head at ${o.head} yet (${reason}); trying for up to ${Math.round((o.connectTimeoutMs ?? 15_000) / 100) / 10} s\n`)) }) : undefined;
  const warming = new AbortController();
  const saved: { save(): Promise<void> }[] = [statCache];
  const closing: { close(): Promise<void> }[] = [];
  let warm: Promise<void> | undefined;
  try {
    const git = await gitIdentity(root);
    let makeEnv: string[];
    ({ graph, env: makeEnv } = await loadOrExtractGraph({
      git,
      files,
      cas: localCas,
      cacheDir: o.cacheDir,
      args: o.args,
      buildDir: o.buildDir,
      env,
      // Loaded only on a graph-cache miss: a rebuild does not parse the extractors (and fast-glob).
      extract: async () => {
        // A graph to extract on files this client has not seen (a new checkout, a pull): most
        // likely a tree the cluster has not built either. Its nodes fetch it while make's dry run
        // and the first steps run here, not when the first actions arrive. (A tree that only lost
        // files, say its outputs, changes no content: nothing is sent, nor gRPC loaded, then.)
        // The tree is read through a view of its own: the build's snapshots around its steps must not see one taken mid-step.
        if (head?.prefetchTree && !o.dryRun && statCache.rehashed().size > 0) warm = prefetchTree(head.prefetchTree, createProjectFiles(root, statCache), jobs, warming.signal, o.verbose ? sink : undefined);
        return (await import('../../dag-extractor/index.js')).extractGraph(root, { makeArgs: o.args, buildDir: o.buildDir, signal });
      },
    }));
    const localAc = createCompletenessCheckingActionCache(createDiskActionCache(path.join(o.cacheDir, 'ac'), { durable: false, touchAfterMs: METADATA_TOUCH_MS }), localCas);
    const manifest = await loadDepManifest(path.join(o.cacheDir, 'manifests', `${projectKey}.json`));
    const history = await loadKeyHistory(path.join(o.cacheDir, 'history', `${projectKey}.jsonl`), { eager: o.explain });
    saved.push(manifest, history);
    const runner = createProcessRunner();
    const localExecutor = createInPlaceExecutor({ runner, cas: localCas, files, env });
    closing.push(localExecutor);
    const trees = loadTreeMemo(path.join(o.cacheDir, 'trees', `${projectKey}.txt`));
    saved.push(trees);
    const directives = loadDirectiveStore(path.join(o.cacheDir, 'includes', `${projectKey}.json`));
    saved.push(directives);
    const scanner = createIncludeScanner(root, { store: directives, contentHash: async (f) => (await files.state(f))?.digest.hash });
    const keyDeps = { files, scanner, manifest, tools: createToolResolver(statCache, { companionsFile: path.join(o.cacheDir, 'toolchains.json') }), env, trees, git, makeEnv };
    const summary = await runBuild(
      {
        graph,
        keyDeps,
        localCas,
        localAc,
        remoteCache: head?.remoteCache,
        executor: head?.remoteExecutor ?? localExecutor,
        localExecutor,
        stepCache: createDiskStepCache(path.join(o.cacheDir, 'steps')),
        reporter,
        history,
        changedFiles: statCache.rehashed,
        estimate,
        dag: head?.dagClient && buildId ? { client: head.dagClient, uploader: head.remoteExecutor, buildId } : undefined,
        signal,
      },
      { jobs, keepGoing: o.keepGoing, dryRun: o.dryRun, explain: o.explain, localMax: o.head ? (o.localMax ?? os.availableParallelism()) : 0 },
    );
    const wallMs = Date.now() - started;
    reporter.summary(summary, wallMs);
    reporter.report?.(buildReport({ graph, summary, wallMs, where: timeline.where(), buildId, bytes: o.head ? bytes : undefined }));
    if (o.profile) {
      try {
        await writeFile(o.profile, JSON.stringify(timeline.trace({ buildId })));
      } catch (err) {
        throw new OrionError(Code.INVALID_ARGUMENT, `--profile: cannot write ${o.profile}: ${(err as Error).message}`);
      }
      if (!o.quiet) sink.stderr(`orion: wrote the build's timeline to ${o.profile} (open it in https://ui.perfetto.dev or chrome://tracing)\n`);
    }
    return summary;
  } catch (err) {
    if (err instanceof OrionError && err.code === Code.UNAVAILABLE && o.head && !err.fatal) {
      throw new OrionError(Code.UNAVAILABLE, `cannot reach the head at ${o.head}: ${err.message}`, { hint: 'check that `orion head` runs there, or build without --head' });
    }
    throw err;
  } finally {
    warming.abort();
    await warm;
    await Promise.all(saved.map((x) => x.save()));
    await Promise.all(closing.map((x) => x.close()));
    head?.close();
    if (!o.dryRun) await trimLocalCache(o.cacheDir, o.cacheMaxBytes ?? DEFAULT_CACHE_BYTES, o.verbose ? sink : undefined);
  }
}

/** Default of --cache-size (ORION_CACHE_SIZE): ccache's default too. */
export const DEFAULT_CACHE_BYTES = 5 * 2 ** 30;

/**
 * Keeps the local cache within `maxBytes`: at most once an hour, after a build, the blobs used
 * least recently go (none used within the hour: another build may be using them). Never fails
 * the build.
 */
async function trimLocalCache(cacheDir: string, maxBytes: number, verbose?: Sink): Promise<void> {
  const dir = path.join(cacheDir, 'cas');
  try {
    const r = await trimDiskStoreIfDue(dir, { maxBytes, keepMs: DEFAULT_KEEP_MS, everyMs: 3_600_000 });
    if (r && (r.removed > 0 || r.over)) {
      const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;
      verbose?.stderr(`orion: local cache: ${r.removed} least recently used blob(s) removed, ${mib(r.bytesAfter)} left of ${mib(maxBytes)}${r.over ? ' (over: the rest was used within the hour)' : ''}\n`);
    }
    if (r === undefined) return;
    // The bookkeeping beside the blobs grows by a file per action, step, graph and checkout path:
    // what no build used for METADATA_KEEP_MS goes too (a cache miss if it is ever wanted again).
    let removed = 0;
    for (const sub of LOCAL_METADATA_DIRS) removed += await trimUnusedFiles(path.join(cacheDir, sub), METADATA_KEEP_MS);
    if (removed > 0) verbose?.stderr(`orion: local cache: ${removed} file(s) of entries no build used for ${METADATA_KEEP_MS / 86_400_000} days removed\n`);
  } catch (err) {
    verbose?.stderr(`orion: could not trim the local cache in ${cacheDir}: ${(err as Error).message}\n`);
  }
}

/** The local cache's bookkeeping directories (all but the blobs): action results, step effects, graphs, per-project memos. */
const LOCAL_METADATA_DIRS = ['ac', 'steps', 'graphs', 'stat', 'history', 'manifests', 'trees', 'includes'];

/** Uploads the tree and asks the head's nodes to fetch it. Never fails the build: it is only a head start. */
async function prefetchTree(prefetch: NonNullable<HeadConnection['prefetchTree']>, files: ProjectFiles, parallelism: number, signal: AbortSignal, verbose?: Sink): Promise<void> {
  const t0 = Date.now();
  try {
    // Stops waiting when the build ends: a build the cache served must not wait for a head that does not answer.
    const sent = prefetch(files, signal, parallelism);
    sent.catch(() => undefined);
    const ended = new Promise<number>((resolve) => (signal.aborted ? resolve(0) : signal.addEventListener('abort', () => resolve(0), { once: true })));
    const nodes = await Promise.race([sent, ended]);
    if (!signal.aborted) verbose?.stderr(`orion: sent the tree to the head in ${Date.now() - t0} ms; ${nodes} node(s) fetch it ahead of the build\n`);
  } catch (err) {
    if (!signal.aborted) verbose?.stderr(`orion: could not send the tree ahead of the build (${(err as Error).message}); the nodes fetch it with their first actions\n`);
  }
}
