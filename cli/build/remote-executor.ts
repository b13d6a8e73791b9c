/**
 * Runs actions on a cluster: the project tree goes to the head's CAS once
 * (only blobs it lacks), each action executes in that global source context on
 * a node, and its outputs come back into the tree.
 */
import { createReadStream, readFileSync } from 'node:fs';
import { Metadata, type ChannelCredentials, type ClientOptions } from '@grpc/grpc-js';
import { ExecuteOperationMetadata, ExecuteResponse, ExecutionClient, ExecutionStage_Value } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { actionMetadata } from './action-metadata.js';
import type { Operation } from '../../proto/gen/google/longrunning/operations.js';
import { Code, OrionError } from '../../common/errors.js';
import { retryTransient } from '../../common/retry.js';
import type { BuildAction } from '../../dag-extractor/types.js';
import { withoutOrionDepfile, type ActionKey } from './action-key.js';
import { EXEC_ROOT_HEADER } from '../../common/platform-properties.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestKey, digestOf, digestOfFile, fromDigestKey } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import { actionResultFromPb, digestToPb, errorFromStatus } from '../../proto/convert.js';
import { fromServiceError } from '../../proto/grpc-status.js';
import { PUT_MANY_MAX_BLOB, type RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import type { BuildExecutor, ExecOutcome } from './in-place-executor.js';
import { writeOutputs } from './output-writer.js';
import { assertSafeResult } from './result-guard.js';
import type { ProjectFiles } from './project-files.js';

export interface RemoteExecutorDeps {
  /** REAPI priority of an action (lower runs sooner): minus its critical-path length, so long chains start first. */
  priorityOf?: (a: BuildAction) => number;
  /** How long to keep retrying when the head is unreachable (it may be restarting). */
  retryBudgetMs?: number;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  address: string;
  credentials: ChannelCredentials;
  /** Extra client options (the bearer-token interceptor, common/credentials.ts). */
  channelOptions?: Partial<ClientOptions>;
  remote: RemoteBlobStore;
  local: BlobStore;
  files: ProjectFiles;
  instanceName?: string;
  /** Sent with each Execute (metadata x-orion-build-id) so the head can group this build's work. */
  buildId?: string;
  /** Told when the head queues an action and when a node starts it (with the node's id). */
  onStage?(a: BuildAction, stage: 'queued' | 'executing', worker?: string): void;
}

export interface RemoteExecutor extends BuildExecutor {
  /** Bytes uploaded to the head so far. */
  uploadedBytes(): number;
  /** Uploads what the head lacks of the project tree as it is now (or of `files`, another view of it); returns its root digest. */
  uploadTree(files?: ProjectFiles): Promise<Digest>;
  /**
   * Uploads what the head lacks of `digests`, reading each from `source` (bytes, or a
   * file path). Returns the files that no longer hold the digest they were read with.
   */
  ensure(digests: Digest[], source: (d: Digest) => Buffer | string | undefined): Promise<string[]>;
  close(): void;
}

/** Small blobs read ahead of one putMany call: a large tree is never held in memory whole. */
const UPLOAD_GROUP_BYTES = 16 * 1024 * 1024;

/** The file's bytes, or undefined when it is gone (or no longer a file). */
function readIfPresent(file: string): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

export function createRemoteExecutor(deps: RemoteExecutorDeps): RemoteExecutor {
  const client = new ExecutionClient(deps.address, deps.credentials, { 'grpc.max_receive_message_length': 64 * 1024 * 1024, ...deps.channelOptions });
  const present = new Set<string>();
  let uploaded = 0;
  let uploading: Promise<unknown> = Promise.resolve();

  /**
   * Uploads whatever of `blobs` the head lacks. `source` gives the bytes or file of each.
   * Returns the files that no longer hold the digest they were read with.
   */
  async function ensure(digests: Digest[], source: (d: Digest) => Buffer | string | undefined): Promise<string[]> {
    const changed: string[] = [];
    const unknown = digests.filter((d) => !present.has(digestKey(d)));
    if (unknown.length === 0) return changed;
    const missing = await deps.remote.findMissing(unknown);
    const missingKeys = new Set(missing.map(digestKey));
    for (const d of unknown) if (!missingKeys.has(digestKey(d))) present.add(digestKey(d));
    // Small blobs go many to a request: a stream per file cost ~3 ms each (a Redis tree: ~5 s).
    const queue: Digest[] = [];
    let group: { digest: Digest; data: Buffer; src: string | undefined }[] = [];
    let groupBytes = 0;
    const flush = async () => {
      const sent = group;
      group = [];
      groupBytes = 0;
      const refused = new Set((await deps.remote.putMany(sent)).map(digestKey));
      for (const b of sent) {
        if (refused.has(digestKey(b.digest))) throw new OrionError(Code.INTERNAL, `the head refused blob ${digestKey(b.digest)}${b.src ? ` (${b.src})` : ''} as not matching its digest`);
        uploaded += b.digest.sizeBytes;
        present.add(digestKey(b.digest));
      }
    };
    for (const d of missing) {
      if (d.sizeBytes > PUT_MANY_MAX_BLOB) {
        queue.push(d);
        continue;
      }
      const src = source(d);
      if (src === undefined) throw new OrionError(Code.INTERNAL, `no local source for blob ${digestKey(d)}`);
      const data = typeof src === 'string' ? readIfPresent(src) : src;
      // The tree holds the outputs of actions running here too: one may have rewritten the file since.
      if (typeof src === 'string' && (!data || digestOf(data).hash !== d.hash)) {
        changed.push(src);
        continue;
      }
      group.push({ digest: d, data: data!, src: typeof src === 'string' ? src : undefined });
      groupBytes += d.sizeBytes;
      if (groupBytes >= UPLOAD_GROUP_BYTES) await flush();
    }
    if (group.length > 0) await flush();
    await Promise.all(
      Array.from({ length: Math.min(8, queue.length) }, async () => {
        for (let d = queue.shift(); d; d = queue.shift()) {
          const src = source(d);
          if (src === undefined) throw new OrionError(Code.INTERNAL, `no local source for blob ${digestKey(d)}`);
          if (typeof src === 'string') {
            try {
              await deps.remote.putStream(d, createReadStream(src));
            } catch (err) {
              // The tree holds the outputs of actions running here too: one may have rewritten the file since.
              if ((await digestOfFile(src).catch(() => undefined))?.hash === d.hash) throw err;
              changed.push(src);
              continue;
            }
          } else await deps.remote.put(d, src);
          uploaded += d.sizeBytes;
          present.add(digestKey(d));
        }
      }),
    );
    return changed;
  }

  async function uploadTree(files = deps.files, attempt = 1): Promise<Digest> {
    const snap = await files.snapshot();
    const tree = await files.tree();
    const fileSources = new Map<string, string>();
    const fileDigests: Digest[] = [];
    for (const [rel, e] of snap.entries) {
      if (e.kind !== 'file') continue;
      fileSources.set(digestKey(e.state.digest), `${files.root}/${rel}`);
      fileDigests.push(e.state.digest);
    }
    const dirDigests = [...tree.directories.keys()].map(fromDigestKey);
    const changed = await ensure(fileDigests, (d) => fileSources.get(digestKey(d)));
    if (changed.length > 0) {
      // Written by an action still running here, so no input of this one: read the tree again.
      if (attempt >= 20) throw new OrionError(Code.ABORTED, `files kept changing while they were uploaded: ${changed.join(', ')}`);
      for (const f of changed) files.forget(f);
      await new Promise((r) => setTimeout(r, 10 * attempt));
      return uploadTree(files, attempt + 1);
    }
    await ensure(dirDigests, (d) => tree.directories.get(digestKey(d)));
    return tree.rootDigest;
  }

  function execute(a: BuildAction, actionDigest: Digest, execRoot: Digest, signal: AbortSignal): Promise<ExecuteResponse> {
    return new Promise((resolve, reject) => {
      const md = deps.buildId ? actionMetadata(deps.buildId, a) : new Metadata();
      md.set(EXEC_ROOT_HEADER, digestKey(execRoot));
      const priority = deps.priorityOf?.(a) ?? 0;
      const stream = client.execute(
        {
          instanceName: deps.instanceName ?? '',
          skipCacheLookup: false,
          actionDigest: digestToPb(actionDigest),
          executionPolicy: priority !== 0 ? { priority } : undefined,
          digestFunction: 0,
          inlineStdout: false,
          inlineStderr: false,
          inlineOutputFiles: [],
        },
        md,
      );
      let response: ExecuteResponse | undefined;
      const onAbort = () => stream.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      stream.on('data', (op: Operation) => {
        if (op.done && op.response) response = ExecuteResponse.decode(op.response.value);
        else if (deps.onStage && op.metadata) {
          const m = ExecuteOperationMetadata.decode(op.metadata.value);
          if (m.stage === ExecutionStage_Value.QUEUED) deps.onStage(a, 'queued');
          else if (m.stage === ExecutionStage_Value.EXECUTING) deps.onStage(a, 'executing', m.partialExecutionMetadata?.worker || undefined);
        }
      });
      stream.on('error', (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(fromServiceError(err, 'Execute'));
      });
      stream.on('end', () => {
        signal.removeEventListener('abort', onAbort);
        if (response) resolve(response);
        else reject(new OrionError(Code.UNAVAILABLE, 'Execute stream ended without a result'));
      });
    });
  }

  async function fetchToLocal(d: Digest) {
    if (await deps.local.has(d)) return;
    await deps.local.putStream(d, deps.remote.getStream(d));
  }

  /** Retries transient failures (head restarting, network blips); the head may have restarted, so what it held is checked again. */
  const withRetries = <T>(what: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> =>
    retryTransient(what, fn, { budgetMs: deps.retryBudgetMs ?? 120_000, signal, random: deps.random, sleep: deps.sleep, onRetry: () => present.clear() });

  return {
    async run(a, key, signal): Promise<ExecOutcome> {
      if (!key) throw new OrionError(Code.INTERNAL, `action ${a.label} has no key`);
      return withRetries(`remote execution of ${a.label}`, signal, () => runOnce(a, key, signal));
    },
    uploadedBytes: () => uploaded,
    uploadTree(files) {
      // One upload at a time: a tree sent ahead of the build (Builds.Prefetch) is mostly the tree
      // the DAG needs, which then finds it present instead of sending the same files again.
      const next = uploading.then(() => uploadTree(files));
      uploading = next.catch(() => undefined);
      return next;
    },
    ensure,
    close: () => client.close(),
  };

  async function runOnce(a: BuildAction, key: ActionKey, signal: AbortSignal): Promise<ExecOutcome> {
    {
      const execRoot = await uploadTree();
      await ensure(
        [...key.blobs.keys()].map(fromDigestKey),
        (d) => key.blobs.get(digestKey(d)),
      );
      const sentAt = Date.now();
      const response = await execute(a, key.actionDigest, execRoot, signal);
      const err = errorFromStatus(response.status, `remote execution of ${a.label}`);
      if (err) throw err;
      if (!response.result) throw new OrionError(Code.INTERNAL, `remote execution of ${a.label} returned no result`);
      const result = actionResultFromPb(response.result);
      assertSafeResult(result, deps.files.root, a.cwd, `the result of ${a.label}`);
      const fetchStd = async (d: Digest | undefined, raw: Buffer | undefined) => (raw ? raw : d ? await deps.remote.get(d) : Buffer.alloc(0));
      const stdout = await fetchStd(result.stdoutDigest, result.stdoutRaw);
      const stderr = await fetchStd(result.stderrDigest, result.stderrRaw);
      let depfile: string | undefined;
      if (result.exitCode === 0) {
        for (const f of result.outputFiles) await fetchToLocal(f.digest);
        if (result.stdoutDigest) await deps.local.put(result.stdoutDigest, stdout);
        if (result.stderrDigest) await deps.local.put(result.stderrDigest, stderr);
        const dep = key.depfileRel ? result.outputFiles.find((f) => f.path === key.depfileRel) : undefined;
        if (dep) depfile = (await deps.local.get(dep.digest)).toString('utf8');
        result.outputFiles = withoutOrionDepfile(result, key).outputFiles;
        await writeOutputs(result, a.cwd, deps.files, deps.local);
        if (!key.depfileRel && key.depfileAbs) {
          const s = await deps.files.state(key.depfileAbs);
          if (s) depfile = (await deps.local.get(s.digest)).toString('utf8');
        }
      }
      return { result, stdout, stderr, depfile, where: result.executionMetadata?.worker || 'remote', sentAt };
    }
  }
}
