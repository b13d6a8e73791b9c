import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { ActionCacheService, CapabilitiesService, ExecutionService } from '../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ByteStreamDefinition, CasDefinition } from '../proto/blob-codecs.js';
import { HealthService } from '../proto/gen/grpc/health/v1/health.js';
import { WorkerService } from '../proto/gen/orion/v1/worker.js';
import { ClusterService } from '../proto/gen/orion/v1/cluster.js';
import { BuildsService } from '../proto/gen/orion/v1/build.js';
import { systemClock, type Clock } from '../common/clock.js';
import { Code, OrionError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../cas/blob-store.js';
import type { ActionCache } from '../cas/action-cache.js';
import { createDiskBlobStore, verifyDiskBlobs } from '../cas/disk-blob-store.js';
import { startStoreTrimmer } from '../cas/store-trimmer.js';
import { DEFAULT_KEEP_MS, touchAfterFor, type TrimResult } from '../cas/store-trim.js';
import { createCheckpointedBlobStore, openSyncCheckpoint, syncFileSystem, type SyncCheckpoint, type SyncCheckpointOptions } from '../cas/sync-checkpoint.js';
import { commandRunner } from '../sandbox/runner.js';
import { createCompletenessCheckingActionCache } from '../cas/complete-action-cache.js';
import type { ActionResult } from '../cas/types.js';
import { createActionCacheService } from './action-cache-service.js';
import { createByteStreamService } from './bytestream-service.js';
import { createCapabilitiesService } from './capabilities-service.js';
import { createCasService, DEFAULT_CAS_LIMITS } from './cas-service.js';
import { createClusterService } from './cluster-service.js';
import { createExecutionService } from './execution-service.js';
import { createHealthService } from './health-service.js';
import { openLogActionCache } from '../cas/log-action-cache.js';
import { createInstanceCaches, type InstanceCaches } from './instance-caches.js';
import { createNodeRegistry, type NodeRegistry } from './node-registry.js';
import { createScheduler, type Execution, type Scheduler } from './scheduler.js';
import { createWorkerService } from './worker-service.js';
import { createMeteredBlobStore } from '../cas/metered-blob-store.js';
import { createMeteredActionCache } from '../cas/metered-action-cache.js';
import { listenHttp, splitHostPort, type HttpListener } from '../common/http-listen.js';
import { createBuildTracker, type BuildTracker } from './build-tracker.js';
import { createHeadMetrics, type HeadMetrics } from './head-metrics.js';
import { createHttpApi, type Authorize } from './http-server.js';
import { authorizeHttp, createAuthInterceptor, createHeadAuth, type HeadAuth } from './auth.js';
import { DEFAULT_HEAD_LIMITS, type HeadLimits } from './limits.js';
import { createTreeOverlay } from '../cas/tree-overlay.js';
import { createDagBuilds, type DagBuilds } from './dag-build.js';
import { createBuildService } from './build-service.js';
import { createTreePrefetch } from './tree-prefetch.js';
import { shutdownServer } from '../proto/server-shutdown.js';

export interface HeadOptions {
  /** host:port to listen on; port 0 picks a free port. */
  listen: string;
  dataDir: string;
  /** Bytes of disk the action cache may use per instance name; past it the oldest entries not in use go (default 512 MiB). */
  actionCacheMaxBytes?: number;
  heartbeatTimeoutMs: number;
  log: Logger;
  clock?: Clock;
  maxAttempts?: number;
  /** First retry delay after a node failure (doubles per attempt, jittered). */
  retryBackoffMs?: number;
  /** Least time an action runs before a speculative copy may start (scheduler default: 2 s). */
  stragglerMinMs?: number;
  /** Whether REAPI clients may write the action cache directly (Bazel's cache-only mode needs it). */
  allowActionCacheUpdates?: boolean;
  maxMessageBytes?: number;
  /** host:port for the dashboard, JSON API, server-sent events and /metrics (unset: no HTTP). */
  httpListen?: string;
  /** Decides each HTTP request (default: allow); the gRPC API's credentials can be checked here. */
  authorizeHttp?: Authorize;
  /** Who may call what (head/auth.ts). Default: no authentication, allowActionCacheUpdates decides cache writes. */
  auth?: HeadAuth;
  /** TLS or mutual TLS (common/credentials.ts loadServerCredentials). Default: plaintext. */
  serverCredentials?: ServerCredentials;
  /** Request size, timeout and tree bounds (head/limits.ts). */
  limits?: Partial<HeadLimits>;
  /**
   * The CAS's size: past `maxBytes` the least recently used blobs go, never one used within
   * `keepMs` (cas/store-trim.ts). Default: 50 GiB, 1 hour.
   */
  cas?: { maxBytes?: number; keepMs?: number; trimEveryMs?: number };
  /** How the data directory is flushed and checked after a machine crash (tests inject these). */
  durability?: Pick<SyncCheckpointOptions, 'intervalMs' | 'syncFs' | 'bootId' | 'clock'>;
}

export interface Head {
  /** The bound port. */
  port: number;
  address: string;
  cas: BlobStore;
  /** Trims the CAS to its size now (it also trims at start, every few minutes and as it grows). */
  trimCas(): Promise<TrimResult | undefined>;
  caches: InstanceCaches;
  registry: NodeRegistry;
  scheduler: Scheduler;
  builds: BuildTracker;
  /** Whole-DAG builds (the orion.v1 Builds service). */
  dags: DagBuilds;
  metrics: HeadMetrics;
  /** http://host:port of the dashboard, when httpListen was given. */
  httpUrl?: string;
  /** The access policy every RPC passes; HTTP endpoints use authorizeHttp(head.auth, req). */
  auth: HeadAuth;
  /** Stops accepting work, ends node streams, waits for in-flight RPCs briefly. */
  stop(): Promise<void>;
}

/** Verifies a node's result before it is trusted: every referenced blob must be in the head's CAS. */
async function acceptResult(cas: BlobStore, caches: InstanceCaches, e: Execution, result: ActionResult, nodeId: string): Promise<ActionResult> {
  const referenced = [
    ...result.outputFiles.map((f) => f.digest),
    ...result.outputDirectories.map((d) => d.treeDigest),
    ...(result.stdoutDigest ? [result.stdoutDigest] : []),
    ...(result.stderrDigest ? [result.stderrDigest] : []),
  ];
  const missing = await cas.findMissing(referenced);
  if (missing.length > 0) {
    throw new OrionError(Code.DATA_LOSS, `node ${nodeId} reported ${missing.length} output blob(s) it never uploaded`, { missing });
  }
  // REAPI's queued_timestamp: when the head queued it (the node knows only when it started).
  const stamped: ActionResult = { ...result, executionMetadata: { ...(result.executionMetadata ?? { worker: nodeId }), queuedMs: e.queuedAt } };
  if (stamped.exitCode === 0 && !e.request.action.doNotCache) {
    await caches.forInstance(e.request.instanceName).put(e.request.actionDigest, stamped);
  }
  return stamped;
}

export async function startHead(opts: HeadOptions): Promise<Head> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log;
  await mkdir(opts.dataDir, { recursive: true });
  let scheduler: Scheduler | undefined;
  let builds: BuildTracker | undefined;
  const registry = createNodeRegistry({ clock, heartbeatTimeoutMs: opts.heartbeatTimeoutMs });
  const metrics = createHeadMetrics({ scheduler: () => scheduler!, registry, builds: () => builds });
  // Blobs (uploaded, and those the head derives itself: the Directories of exec and key roots)
  // are written unflushed and the file system is flushed as a whole within a few seconds
  // (cas/sync-checkpoint.ts); after a machine crash, blobs written since the last flush are
  // rehashed at start and the torn ones removed. A flush per blob cost ~0.1 ms of CPU and a disk
  // round trip per file.
  const casDir = path.join(opts.dataDir, 'cas');
  let checkpoint: SyncCheckpoint | undefined;
  // Kept within its size: each use of a blob older than a sixth of keepMs sets its mtime again,
  // and trims remove the least recently used (cas/store-trim.ts).
  const trimming = new AbortController();
  const keepMs = opts.cas?.keepMs ?? DEFAULT_KEEP_MS;
  let trimReady = false;
  // Not before the crash check below has looked at the blobs written since the last flush.
  const casMaxBytes = opts.cas?.maxBytes ?? 50 * 2 ** 30;
  const trimmer = startStoreTrimmer({ dir: casDir, maxBytes: casMaxBytes, keepMs, everyMs: opts.cas?.trimEveryMs ?? 600_000, log, signal: trimming.signal, ready: () => trimReady, onTrim: (r) => metrics.casTrimmed(r, casMaxBytes) });
  // One meter for the metrics and the trimmer's growth count.
  const meter = { read: metrics.cas.read, written: (n: number) => (metrics.cas.written(n), trimmer.wrote(n)) };
  const cas = createMeteredBlobStore(createCheckpointedBlobStore(createDiskBlobStore(casDir, { durable: false, touchAfterMs: touchAfterFor(keepMs) }), { dirtied: () => checkpoint?.dirtied() }), meter);
  // The action cache is an append-only log with an index in memory (cas/log-action-cache.ts): a
  // put is one write, a miss a map lookup; the file-per-entry cache cost a stat per lookup and four
  // file calls per executed action. Entries are not flushed one by one (the checkpoint above
  // flushes them with the blobs): a record a power loss cut short fails its checksum and is a miss,
  // a blob torn by it is removed at start, and each hit is checked for its blobs before it is
  // served. A crash can lose recent entries (those actions run again), never serve a wrong one.
  const caches = createInstanceCaches((dir) => {
    const log = openLogActionCache(dir, { maxBytes: opts.actionCacheMaxBytes });
    return Object.assign(createMeteredActionCache(createCompletenessCheckingActionCache(log, cas), metrics.actionCacheLookup), { close: log.close });
  }, path.join(opts.dataDir, 'action-cache'));
  // Takes the default instance's lock now: a second head on this data directory fails at its start.
  caches.forInstance('');
  // After the lock: a second head must not check (and remove) blobs the running one is writing.
  const runCommand = commandRunner();
  try {
    checkpoint = await openSyncCheckpoint({
      recordPath: path.join(opts.dataDir, 'synced.json'),
      syncDir: opts.dataDir,
      verify: (sinceMs) => verifyDiskBlobs(casDir, sinceMs),
      log,
      // `sync -f` started by the spawn helper (orion-spawn), not a fork of the head: each fork cost
      // its event loop ~30 ms (0.4-0.5 s of its CPU in a cold Redis build on a 2-core VM).
      syncFs: (dir) => syncFileSystem(dir, runCommand),
      ...opts.durability,
    });
  } catch (err) {
    caches.close();
    throw err;
  }
  const heartbeatIntervalMs = Math.max(50, Math.floor(opts.heartbeatTimeoutMs / 3));
  // Nodes read each other's blobs with this secret (a new one per head run).
  const peerToken = randomBytes(32).toString('hex');
  const workers = createWorkerService({ registry, log, heartbeatIntervalMs, peerToken, scheduler: () => scheduler! });
  scheduler = createScheduler({
    registry,
    clock,
    log,
    maxAttempts: opts.maxAttempts,
    retryBackoffMs: opts.retryBackoffMs ?? 100,
    stragglerMinMs: opts.stragglerMinMs,
    send: (nodeId, cmd) => workers.send(nodeId, cmd),
    acceptResult: (e, result, nodeId) => acceptResult(cas, caches, e, result, nodeId),
  });
  builds = createBuildTracker({ scheduler, clock, log, onExecuted: metrics.actionExecuted });
  registry.on('lost', (nodeId, reason) => log.warn({ nodeId, reason }, 'node lost; its actions were requeued'));

  const limits: HeadLimits = { ...DEFAULT_HEAD_LIMITS, ...(opts.maxMessageBytes ? { maxMessageBytes: opts.maxMessageBytes } : {}), ...opts.limits };
  const auth = opts.auth ?? createHeadAuth({ allowClientCacheWrites: opts.allowActionCacheUpdates ?? true });
  const maxMessage = limits.maxMessageBytes;
  const server = new Server({
    'grpc.max_receive_message_length': maxMessage,
    'grpc.max_send_message_length': maxMessage,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    // Every call is authenticated and authorised before its handler runs.
    interceptors: [createAuthInterceptor(auth, log)],
  });
  let serving = true;
  server.addService(CapabilitiesService, createCapabilitiesService({ maxBatchTotalBytes: DEFAULT_CAS_LIMITS.maxBatchTotalBytes, execEnabled: true, updateEnabled: auth.allowClientCacheWrites }));
  server.addService(CasDefinition, createCasService(cas, { ...DEFAULT_CAS_LIMITS, maxDirectoryBytes: limits.maxMessageBytes }));
  server.addService(ByteStreamDefinition, createByteStreamService(cas, { maxBlobBytes: limits.maxBlobBytes }));
  server.addService(ActionCacheService, createActionCacheService({ caches, cas, allowUpdates: auth.enabled || auth.allowClientCacheWrites, builds }));
  server.addService(ExecutionService, createExecutionService({ cas, caches, scheduler, log, builds, limits }));
  server.addService(WorkerService, workers.service);
  server.addService(ClusterService, createClusterService(registry, builds));
  const dags = createDagBuilds({ cas, caches, scheduler, overlay: createTreeOverlay(cas), clock, log, limits, builds });
  const trees = createTreePrefetch({ cas, registry, send: (nodeId, root, buildId) => workers.prefetch(nodeId, root, buildId), log });
  server.addService(BuildsService, createBuildService(dags, trees));
  server.addService(
    HealthService,
    createHealthService(
      [
        'build.bazel.remote.execution.v2.Capabilities',
        'build.bazel.remote.execution.v2.ContentAddressableStorage',
        'build.bazel.remote.execution.v2.ActionCache',
        'build.bazel.remote.execution.v2.Execution',
        'google.bytestream.ByteStream',
        'orion.v1.Worker',
        'orion.v1.Cluster',
        'orion.v1.Builds',
      ],
      () => serving,
    ),
  );

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(opts.listen, opts.serverCredentials ?? ServerCredentials.createInsecure(), (err, p) => (err ? reject(new OrionError(Code.UNAVAILABLE, `cannot listen on ${opts.listen}: ${err.message}`)) : resolve(p)));
  });
  const sweepEvery = Math.max(20, Math.floor(opts.heartbeatTimeoutMs / 4));
  const sweeper = setInterval(() => {
    registry.sweep();
    scheduler.checkStragglers();
  }, sweepEvery);
  sweeper.unref();
  const host = opts.listen.slice(0, opts.listen.lastIndexOf(':'));
  log.info({ port, dataDir: opts.dataDir }, 'head listening');
  let http: { api: ReturnType<typeof createHttpApi>; listener: HttpListener } | undefined;
  if (opts.httpListen) {
    const api = createHttpApi({ registry, builds, metrics: metrics.registry, log, authorize: opts.authorizeHttp ?? ((req) => authorizeHttp(auth, req).ok) });
    const { host: httpHost, port: httpPort } = splitHostPort(opts.httpListen);
    http = { api, listener: await listenHttp(httpHost, httpPort, api.handler) };
    log.info({ url: http.listener.url }, 'dashboard listening');
  }

  trimReady = true;
  void trimmer.trimNow();
  return {
    port,
    address: `${host}:${port}`,
    cas,
    trimCas: () => trimmer.trimNow(),
    caches,
    registry,
    scheduler,
    builds,
    dags,
    metrics,
    httpUrl: http?.listener.url,
    auth,
    async stop() {
      serving = false;
      trimming.abort();
      await trimmer.trimNow();
      http?.api.close();
      await http?.listener.close();
      clearInterval(sweeper);
      workers.closeAll();
      await shutdownServer(server, 2000);
      caches.close();
      await checkpoint!.close();
    },
  };
}
