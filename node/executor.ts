import { chmod, copyFile, mkdir, rename, rm, lstat, readlink } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../common/clock.js';
import { Code, OrionError, statusOf, wrap } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { putHashedFile, type BlobStore } from '../cas/blob-store.js';
import { digestKey, digestOf, digestOfFile, fromDigestKey, isEmptyDigest } from '../cas/digest.js';
import { buildTreeFromDisk, collectTree, materializeTree, treeOf } from '../cas/merkle.js';
import { encodeTree } from '../cas/directory.js';
import type { Action, ActionResult, Command, Digest, OutputDirectory, OutputFile, OutputSymlink } from '../cas/types.js';
import type { ActionRunner } from '../sandbox/runner.js';
import { confineToRoot } from '../sandbox/path-guard.js';
import { DEPFILE_PROPERTY, MOUNT_PATH_PROPERTY, TOOL_ARG_PROPERTY, TOOL_PROPERTY } from '../common/platform-properties.js';
import type { ToolCheck } from './tool-check.js';
import { decodeDirectory } from '../cas/directory.js';
import { removePath, type ExecRootCache, type ExecRootLease } from './exec-root-cache.js';
import type { PeerFetcher } from './peer-endpoint.js';

/** The PATH an action runs with when its command sets none. */
const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';

export interface Assignment {
  assignmentId: string;
  actionDigest: Digest;
  action: Action;
  command: Command;
  /** Input root to run in, when it differs from action.inputRootDigest (global source context). */
  execRootDigest?: Digest;
  /** The client's build id, when it sent one (for logs). */
  buildId?: string;
  /** Inputs other nodes hold: digestKey -> their peer endpoints. */
  peerSources?: Map<string, string[]>;
  /** Told how many input bytes came from peers and from the head. */
  onTransfer?(peerBytes: number, headBytes: number): void;
}

export interface ExecutorDeps {
  /** The node-local CAS (disk, with localPath for hard links). */
  local: BlobStore;
  /** The head's CAS: inputs come from it, outputs go to it. */
  remote: BlobStore;
  runner: ActionRunner;
  /** Directory for per-action input roots. */
  workDir: string;
  nodeId: string;
  clock: Clock;
  log: Logger;
  /** Template trees and known-complete directories (node/exec-root-cache.ts): exec roots cost only their differences. */
  roots?: ExecRootCache;
  /** Reads inputs from the nodes that produced them. */
  peers?: PeerFetcher;
  /** Called when the last action or prefetch in progress ends (busy() is 0 again). */
  onIdle?(): void;
  /** Refuses actions whose key names another compiler than the one this node would run (node/tool-check.ts). */
  tools?: ToolCheck;
}

export interface Executor {
  execute(a: Assignment, signal: AbortSignal): Promise<ActionResult>;
  /**
   * Fetches a tree a build is about to use into the local CAS and prepares an exec root of it
   * (Builds.Prefetch), one tree at a time. That build's actions wait for it instead of fetching
   * the same files a second time. Resolves to the bytes read from the head (counted again with
   * the first action of that build here, so the build's transfer figures include them).
   */
  prefetch(root: Digest, buildId: string | undefined, signal: AbortSignal): Promise<number>;
  /** Actions and prefetches in progress (0: the local store may be trimmed). */
  busy(): number;
}

function propertyOf(a: Assignment, name: string): string | undefined {
  const props = [...(a.command.platform?.properties ?? []), ...(a.action.platform?.properties ?? [])];
  return props.find((p) => p.name === name)?.value;
}

/** The declared outputs, plus the dependency file Orion asked for. */
function declaredOutputs(a: Assignment): string[] {
  const declared = a.command.outputPaths.length > 0 ? a.command.outputPaths : [...a.command.outputFiles, ...a.command.outputDirectories];
  const dep = propertyOf(a, DEPFILE_PROPERTY);
  return dep ? [...declared, dep] : declared;
}

/** Where an action's inputs may come from besides the head, and the bytes each source gave. */
export interface FetchContext {
  peers?: PeerFetcher;
  /** digestKey -> peer endpoint addresses holding it. */
  sources?: Map<string, string[]>;
  bytes: { peer: number; head: number };
}

/** Blobs being copied into each node-local store, by digest: the copy that will bring them. */
const fetching = new WeakMap<BlobStore, Map<string, Promise<void>>>();

/**
 * Copies the blobs of `digests` the node does not hold. Actions starting together (a node's
 * slots at the start of a build) need the same source tree: a blob another call is already
 * copying is waited for, not fetched twice (each slot fetched the whole tree before).
 */
async function fetchInto(local: BlobStore, remote: BlobStore, digests: Digest[], ctx?: FetchContext): Promise<void> {
  let inflight = fetching.get(local);
  if (!inflight) fetching.set(local, (inflight = new Map()));
  const wanted = await local.findMissing(digests);
  const theirs = new Set<Promise<void>>();
  const mine: Digest[] = [];
  for (const d of wanted) {
    const other = inflight.get(digestKey(d));
    if (other) theirs.add(other);
    else mine.push(d);
  }
  let done!: () => void;
  const copied = new Promise<void>((resolve) => (done = resolve));
  for (const d of mine) inflight.set(digestKey(d), copied);
  try {
    await copyMissing(local, remote, mine, ctx);
  } finally {
    for (const d of mine) if (inflight.get(digestKey(d)) === copied) inflight.delete(digestKey(d));
    done();
  }
  if (theirs.size === 0) return;
  await Promise.all(theirs);
  // What another call failed to copy, this one copies (or reports) itself.
  const own = new Set(mine.map(digestKey));
  const left = await local.findMissing(wanted.filter((d) => !own.has(digestKey(d))));
  if (left.length > 0) await copyMissing(local, remote, left, ctx);
}

/**
 * Copies `wanted` (blobs the node does not hold) from peers or the head into the node-local CAS.
 * Blobs the head does not have either fail with FAILED_PRECONDITION listing them all (REAPI's
 * answer for missing inputs). Every copy has stopped when this settles.
 */
async function copyMissing(local: BlobStore, remote: BlobStore, wanted: Digest[], ctx?: FetchContext): Promise<void> {
  let missing = wanted;
  if (ctx?.peers && ctx.sources && ctx.sources.size > 0 && missing.length > 0) {
    // Outputs of other nodes: read them there first (the head has them too, as a fallback).
    const byPeer = new Map<string, Digest[]>();
    for (const d of missing) {
      const addr = ctx.sources.get(digestKey(d))?.[0];
      if (addr) byPeer.set(addr, [...(byPeer.get(addr) ?? []), d]);
    }
    const got = new Set<string>();
    await Promise.all(
      [...byPeer].map(async ([addr, ds]) => {
        const found = await ctx.peers!.fetch(addr, ds);
        for (const d of ds) {
          const data = found.get(digestKey(d));
          if (!data) continue;
          await local.put(d, data);
          ctx.bytes.peer += data.length;
          got.add(digestKey(d));
        }
      }),
    );
    missing = missing.filter((d) => !got.has(digestKey(d)));
  }
  const absent: Digest[] = [];
  let failure: { err: unknown } | undefined;
  let queue = missing;
  if (ctx) ctx.bytes.head += missing.reduce((n, d) => n + d.sizeBytes, 0);
  if (remote.getMany) {
    // Small blobs in batches (one round trip per ~1 MiB), a few batches at a time.
    const small = missing.filter((d) => d.sizeBytes <= 256 * 1024);
    queue = missing.filter((d) => d.sizeBytes > 256 * 1024);
    const batches: Digest[][] = [];
    for (let i = 0, bytes = 0; i < small.length; i++) {
      if (batches.length === 0 || batches.at(-1)!.length >= 500 || bytes + small[i]!.sizeBytes > 1024 * 1024) {
        batches.push([]);
        bytes = 0;
      }
      batches.at(-1)!.push(small[i]!);
      bytes += small[i]!.sizeBytes;
    }
    await Promise.all(
      Array.from({ length: Math.min(4, batches.length) }, async () => {
        for (let b = batches.shift(); b && !failure; b = batches.shift()) {
          try {
            const r = await remote.getMany!(b);
            absent.push(...r.missing);
            for (const d of b) {
              const data = r.found.get(digestKey(d));
              if (data) await local.put(d, data);
            }
          } catch (err) {
            failure ??= { err };
          }
        }
      }),
    );
  }
  queue = [...queue];
  const workers = Array.from({ length: Math.min(16, queue.length) }, async () => {
    for (let d = queue.shift(); d && !failure; d = queue.shift()) {
      try {
        if (d.sizeBytes > 4 * 1024 * 1024) await local.putStream(d, remote.getStream(d));
        else await local.put(d, await remote.get(d));
      } catch (err) {
        if (statusOf(err) === Code.NOT_FOUND) absent.push(d);
        else failure ??= { err };
      }
    }
  });
  await Promise.all(workers);
  if (failure) throw failure.err;
  if (absent.length > 0) {
    throw new OrionError(Code.FAILED_PRECONDITION, `${absent.length} input blob(s) are not in the head's CAS: ${absent.map(digestKey).join(', ')}`, { missing: absent });
  }
}

/** Fetches a whole input tree (directories then files) into the local CAS. */
async function fetchTree(local: BlobStore, remote: BlobStore, root: Digest, roots?: ExecRootCache, ctx?: FetchContext): Promise<void> {
  if (roots) return fetchTreeIncremental(local, remote, root, roots, ctx);
  // Directories first: collectTree walks through the local store, pulling each level
  // (an absent directory stays NOT_FOUND so collectTree reports every missing one).
  const pulling: BlobStore = {
    ...local,
    has: (d) => local.has(d),
    findMissing: (ds) => local.findMissing(ds),
    async get(d) {
      if (!(await local.has(d))) {
        const data = await remote.get(d);
        await local.put(d, data);
        if (ctx) ctx.bytes.head += data.length;
      }
      return local.get(d);
    },
  };
  const tree = await collectTree(root, pulling);
  await fetchInto(local, remote, tree.fileDigests, ctx);
}

/** Like fetchTree, but skips the directories the node already holds completely. */
async function fetchTreeIncremental(local: BlobStore, remote: BlobStore, root: Digest, roots: ExecRootCache, ctx?: FetchContext): Promise<void> {
  const visited = new Map<string, Digest>();
  const files: Digest[] = [];
  let level = [root];
  while (level.length > 0) {
    const next: Digest[] = [];
    // Each directory once (identical subtrees share a digest), and none the node already holds whole.
    const unknown = [...new Map(level.map((d) => [digestKey(d), d])).entries()].filter(([k, d]) => !visited.has(k) && !roots.isComplete(d));
    await fetchInto(local, remote, unknown.map(([, d]) => d), ctx && { bytes: ctx.bytes });
    for (const [k, d] of unknown) {
      const dir = decodeDirectory(await local.get(d));
      visited.set(k, d);
      for (const f of dir.files) files.push(f.digest);
      for (const sub of dir.directories) next.push(sub.digest);
    }
    level = next;
  }
  await fetchInto(local, remote, files, ctx);
  roots.markComplete([...visited.values()]);
}

/** Waits for `p` (which never rejects), or until `signal` aborts (a cancelled action stops waiting). */
function untilSettledOrAborted(p: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener('abort', done);
      resolve();
    };
    signal.addEventListener('abort', done, { once: true });
    void p.then(done);
  });
}

/** Blobs up to this size are uploaded without asking the head first whether it has them. */
const SEND_WITHOUT_ASKING = 64 * 1024;

export function createExecutor(deps: ExecutorDeps): Executor {
  let seq = 0;
  /** The latest prefetch (it settles, never rejects, after the ones before it). */
  let prefetching: { buildId?: string; settled: Promise<void> } | undefined;
  /** Bytes prefetched for each build (the last few), counted with the first of its actions here: a build's transfer figures include them. */
  const prefetchedBytes = new Map<string, number>();

  async function upload(d: Digest, file: string | Buffer) {
    if (typeof file === 'string') {
      // Just hashed from this file (the action has exited): a kernel copy, not a second read.
      await putHashedFile(deps.local, d, file);
    } else {
      await deps.local.put(d, file);
    }
  }

  async function collectOutputs(a: Assignment, execRoot: string): Promise<Pick<ActionResult, 'outputFiles' | 'outputSymlinks' | 'outputDirectories'>> {
    const cwdRel = a.command.workingDirectory;
    const declared = declaredOutputs(a);
    const outputFiles: OutputFile[] = [];
    const outputSymlinks: OutputSymlink[] = [];
    const outputDirectories: OutputDirectory[] = [];
    const toSend: Digest[] = [];
    for (const rel of declared) {
      // The action may have turned a parent of `rel` into a symlink to the node's own files.
      const abs = await confineToRoot(execRoot, path.join(execRoot, cwdRel, rel), 'output');
      let st;
      try {
        st = await lstat(abs);
      } catch {
        continue; // Outputs the command did not create are simply absent (REAPI semantics).
      }
      if (st.isSymbolicLink()) {
        outputSymlinks.push({ path: rel, target: await readlink(abs) });
      } else if (st.isFile()) {
        const digest = await digestOfFile(abs);
        await upload(digest, abs);
        toSend.push(digest);
        outputFiles.push({ path: rel, digest, isExecutable: (st.mode & 0o111) !== 0 });
      } else if (st.isDirectory()) {
        const tree = await buildTreeFromDisk(abs);
        for (const [key, file] of tree.files) {
          const d = fromDigestKey(key);
          await upload(d, file);
          toSend.push(d);
        }
        const treeBlob = encodeTree(treeOf(tree));
        const treeDigest = digestOf(treeBlob);
        await deps.local.put(treeDigest, treeBlob);
        toSend.push(treeDigest);
        outputDirectories.push({ path: rel, treeDigest });
      }
    }
    await sendToHead(toSend);
    return { outputFiles, outputSymlinks, outputDirectories };
  }

  /**
   * Uploads blobs the head may lack: small ones at once (asking first would cost a round trip
   * as long as the upload; the head keeps its copy when it has one), larger ones after asking.
   */
  async function sendToHead(ds: Digest[]) {
    const large = ds.filter((d) => d.sizeBytes > SEND_WITHOUT_ASKING);
    const missing = [...ds.filter((d) => d.sizeBytes <= SEND_WITHOUT_ASKING && !isEmptyDigest(d)), ...(large.length > 0 ? await deps.remote.findMissing(large) : [])];
    for (const d of new Map(missing.map((x) => [digestKey(x), x])).values()) {
      try {
        if (d.sizeBytes > 4 * 1024 * 1024) await deps.remote.putStream(d, deps.local.getStream(d));
        else await deps.remote.put(d, await deps.local.get(d));
      } catch (err) {
        // The head refusing an output's bytes (a digest mismatch: this node's disk or memory
        // went bad) is this node's fault, not the action's: INTERNAL lets the head retry elsewhere.
        if (statusOf(err) === Code.INVALID_ARGUMENT) throw new OrionError(Code.INTERNAL, `node ${deps.nodeId} could not upload output ${digestKey(d)}: ${(err as Error).message}`, { cause: err });
        throw err;
      }
    }
  }

  const impl: Omit<Executor, 'busy'> = {
    async execute(a, signal) {
      const log = deps.log.child({ ...(a.buildId ? { buildId: a.buildId } : {}), nodeId: deps.nodeId, assignmentId: a.assignmentId, actionDigest: a.actionDigest.hash });
      const rootDigest = a.execRootDigest ?? a.action.inputRootDigest;
      const dir = path.join(deps.workDir, `a${process.pid}-${++seq}`);
      let execRoot = path.join(dir, 'root');
      let lease: ExecRootLease | undefined;
      const t0 = deps.clock.now();
      const fetched: FetchContext = { peers: deps.peers, sources: a.peerSources, bytes: { peer: 0, head: 0 } };
      try {
        const tool = propertyOf(a, TOOL_PROPERTY);
        let pathFirst: string | undefined;
        const toolArg = Number(propertyOf(a, TOOL_ARG_PROPERTY) ?? 0);
        if (!Number.isInteger(toolArg) || toolArg < 0 || (toolArg > 0 && toolArg >= a.command.arguments.length)) {
          throw new OrionError(Code.INVALID_ARGUMENT, `platform property ${TOOL_ARG_PROPERTY} is ${JSON.stringify(propertyOf(a, TOOL_ARG_PROPERTY))}: not an index of the command's ${a.command.arguments.length} arguments`);
        }
        if (deps.tools && tool !== undefined && a.command.arguments.length > 0) {
          const mountPath = propertyOf(a, MOUNT_PATH_PROPERTY);
          const pathEnv = a.command.environmentVariables.find((v) => v.name === 'PATH')?.value || DEFAULT_PATH;
          ({ pathFirst } = await deps.tools.verify({ expected: tool, argv0: a.command.arguments[toolArg]!, cwd: path.join(mountPath ?? execRoot, a.command.workingDirectory), pathEnv, mountPath }));
        }
        if (a.buildId && prefetching?.buildId === a.buildId) {
          await untilSettledOrAborted(prefetching.settled, signal);
          if (signal.aborted) throw new OrionError(Code.CANCELLED, 'action cancelled before it started');
        }
        try {
          await fetchTree(deps.local, deps.remote, rootDigest, deps.roots, fetched);
        } catch (err) {
          throw wrap(err, 'failed to fetch the input root');
        }
        const ahead = a.buildId ? prefetchedBytes.get(a.buildId) : undefined;
        if (ahead !== undefined) {
          prefetchedBytes.delete(a.buildId!);
          fetched.bytes.head += ahead;
        }
        const t1 = deps.clock.now();
        a.onTransfer?.(fetched.bytes.peer, fetched.bytes.head);
        if (deps.roots) {
          lease = await deps.roots.lease(rootDigest, signal);
          execRoot = lease.dir;
        } else {
          await mkdir(dir, { recursive: true });
          await materializeTree(rootDigest, deps.local, execRoot, { link: true });
        }
        // Symlinks of the input tree may chain out of it: act only on paths that resolve inside.
        const cwd = await confineToRoot(execRoot, path.join(execRoot, a.command.workingDirectory), 'working directory');
        if (cwd !== execRoot) await mkdir(cwd, { recursive: true });
        // An input that is also an output (ranlib, ar r on an existing archive) is a hard
        // link into the local CAS: give the command its own writable copy instead, so the
        // cached blob can never change. Create the parent directories the command expects.
        for (const rel of declaredOutputs(a)) {
          const abs = await confineToRoot(execRoot, path.join(cwd, rel), 'output');
          const st = await lstat(abs).catch(() => undefined);
          if (st?.isFile()) {
            const tmp = `${abs}.orion-copy`;
            await copyFile(abs, tmp);
            await chmod(tmp, st.mode & 0o111 ? 0o755 : 0o644);
            await rename(tmp, abs);
          } else if (st) {
            await rm(abs, { recursive: true, force: true });
          }
          await mkdir(path.dirname(abs), { recursive: true });
        }
        for (const rel of a.command.outputDirectories) await mkdir(await confineToRoot(execRoot, path.join(cwd, rel), 'output directory'), { recursive: true });
        const mountPath = propertyOf(a, MOUNT_PATH_PROPERTY);
        const depfile = propertyOf(a, DEPFILE_PROPERTY);
        const argv = depfile ? [...a.command.arguments, '-MD', '-MF', depfile] : a.command.arguments;
        // The command sees its input root at the project's own path when the client named one.
        const root = { hostDir: execRoot, sandboxDir: mountPath ?? execRoot };
        const sandboxCwd = path.join(root.sandboxDir, a.command.workingDirectory);
        const env: Record<string, string> = {};
        for (const v of a.command.environmentVariables) env[v.name] = v.value;
        if (!env.PATH) env.PATH = DEFAULT_PATH;
        if (pathFirst) env.PATH = `${pathFirst}:${env.PATH}`;
        const t2 = deps.clock.now();
        log.debug({ argv: a.command.arguments }, 'running action');
        const run = await deps.runner.run({
          argv,
          cwd: sandboxCwd,
          root,
          env,
          timeoutMs: a.action.timeoutMs,
          signal,
        });
        const t3 = deps.clock.now();
        if (run.timedOut) {
          throw new OrionError(Code.DEADLINE_EXCEEDED, `action timed out after ${a.action.timeoutMs} ms and was killed: ${a.command.arguments.join(' ')}`);
        }
        const outputs = await collectOutputs(a, execRoot);
        const stdoutDigest = digestOf(run.stdout);
        const stderrDigest = digestOf(run.stderr);
        await deps.local.put(stdoutDigest, run.stdout);
        await deps.local.put(stderrDigest, run.stderr);
        await sendToHead([stdoutDigest, stderrDigest]);
        const t4 = deps.clock.now();
        return {
          ...outputs,
          exitCode: run.exitCode,
          stdoutDigest,
          stderrDigest,
          executionMetadata: {
            worker: deps.nodeId,
            workerStartMs: t0,
            inputFetchStartMs: t0,
            inputFetchCompletedMs: t1,
            executionStartMs: t2,
            executionCompletedMs: t3,
            outputUploadStartMs: t3,
            outputUploadCompletedMs: t4,
            workerCompletedMs: t4,
          },
        };
      } finally {
        // Synchronous: a fraction of the CPU of the promise-based walk, which a busy node pays per action.
        try {
          if (lease) lease.release();
          else removePath(dir);
        } catch (err) {
          log.warn({ err }, 'could not remove action directory');
        }
      }
    },

    prefetch(root, buildId, signal) {
      const before = prefetching?.settled;
      const done = (async () => {
        await before;
        if (signal.aborted) throw new OrionError(Code.CANCELLED, 'prefetch cancelled');
        const bytes = { peer: 0, head: 0 };
        try {
          await fetchTree(deps.local, deps.remote, root, deps.roots, { bytes });
        } catch (err) {
          throw wrap(err, `failed to prefetch tree ${digestKey(root)}`);
        }
        if (buildId && bytes.head > 0) {
          prefetchedBytes.set(buildId, (prefetchedBytes.get(buildId) ?? 0) + bytes.head);
          while (prefetchedBytes.size > 16) prefetchedBytes.delete(prefetchedBytes.keys().next().value!);
        }
        // The template (and one kept exec root) of this tree: the build's first action gets only its differences.
        if (deps.roots) (await deps.roots.lease(root, signal)).release();
        return bytes.head;
      })();
      const mine = { buildId, settled: done.then(() => undefined, () => undefined) };
      prefetching = mine;
      void mine.settled.then(() => {
        if (prefetching === mine) prefetching = undefined;
      });
      return done;
    },
  };

  let active = 0;
  const counted = <T>(work: () => Promise<T>): Promise<T> => {
    active++;
    return work().finally(() => {
      if (--active === 0) deps.onIdle?.();
    });
  };
  return {
    execute: (a, signal) => counted(() => impl.execute(a, signal)),
    prefetch: (root, buildId, signal) => counted(() => impl.prefetch(root, buildId, signal)),
    busy: () => active,
  };
}

