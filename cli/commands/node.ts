import os from 'node:os';
import path from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { defaultNodeId, loadClientAuth, type ClientAuthOptions } from '../../common/credentials.js';
import { systemClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { createLogger } from '../../common/logger.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { startStoreTrimmer, type StoreTrimmer } from '../../cas/store-trimmer.js';
import { DEFAULT_KEEP_MS, touchAfterFor } from '../../cas/store-trim.js';
import { createGrpcBlobStore } from '../../proto/grpc-blob-store.js';
import { createExecutor } from '../../node/executor.js';
import { createExecRootCache } from '../../node/exec-root-cache.js';
import { createPeerFetcher, startPeerEndpoint } from '../../node/peer-endpoint.js';
import { startWorkerLoop, type WorkerLoop } from '../../node/worker.js';
import { createProcessRunner, type ActionRunner } from '../../sandbox/runner.js';
import { createBwrapRunner, probeBwrap } from '../../sandbox/bwrap-runner.js';
import { createStatCache } from '../../cas/stat-cache.js';
import { createToolResolver } from '../../common/tool-resolver.js';
import { createToolCheck } from '../../node/tool-check.js';
import { createPidsLimitRunner, probePidsCgroup } from '../../sandbox/pids-limit-runner.js';
import { daemonSignal } from '../signals.js';
import { createMeteredBlobStore } from '../../cas/metered-blob-store.js';
import { createNodeMetrics } from '../../node/node-metrics.js';
import { startNodeEndpoints } from '../../node/node-endpoints.js';
import { createCorruptingBlobStore } from '../../node/corrupting-blob-store.js';
import type { NodeFault } from '../../node/faults.js';

export interface NodeCommandOptions {
  head: string;
  slots: number;
  workDir: string;
  /** Bytes of disk the node-local CAS may use (default 20 GiB), and how long a used blob is kept whatever the size (default 1 h). */
  cacheMaxBytes?: number;
  cacheKeepMs?: number;
  id?: string;
  sandbox: 'auto' | 'require' | 'off';
  /** Most processes one action may have at once (0: no limit). */
  maxProcesses: number;
  logLevel: string;
  /** TLS files and bearer-token file for reaching the head (ORION_TOKEN otherwise). */
  auth?: ClientAuthOptions;
  /** Where --metrics-port and --health-port listen. */
  host?: string;
  metricsPort?: number;
  healthPort?: number;
  /** Test only: misbehave on purpose (node/faults.ts). */
  faultInject?: NodeFault;
  /** Serve this node's CAS to other nodes on this port of `host` (0: any free port; undefined: no peer transfers). */
  peerPort?: number;
  /** host:port other nodes should use to reach the peer endpoint (default: host:bound port). */
  peerAddress?: string;
}

export async function runNode(o: NodeCommandOptions): Promise<void> {
  const log = createLogger({ level: o.logLevel, name: 'orion-node' });
  const nodeId = o.id ?? defaultNodeId(o.auth?.tlsCert, `${os.hostname()}-${process.pid}`);
  const clientAuth = loadClientAuth(o.auth ?? {});
  await mkdir(o.workDir, { recursive: true });
  const actionsDir = path.join(o.workDir, 'actions');
  // Directories left by a previous run that was killed are removed before starting.
  await rm(actionsDir, { recursive: true, force: true });
  await mkdir(actionsDir, { recursive: true });
  let runner: ActionRunner = createProcessRunner();
  // A process-count cap per action (a fork bomb stops there), where the kernel's pids cgroup is writable.
  const pids = o.maxProcesses > 0 ? await probePidsCgroup() : undefined;
  const pidsRunner = pids ? createPidsLimitRunner(runner, pids, o.maxProcesses) : undefined;
  if (pidsRunner) runner = pidsRunner;
  else if (o.maxProcesses > 0) log.warn('no writable pids cgroup: actions run without a process limit');
  if (o.sandbox !== 'off') {
    // ORION_BWRAP names another bubblewrap binary (tests point it at one that fails).
    const bwrapPath = process.env.ORION_BWRAP || 'bwrap';
    const probe = await probeBwrap(bwrapPath);
    if (probe.ok) runner = createBwrapRunner(runner, { bwrapPath });
    else if (o.sandbox === 'require') throw new OrionError(Code.FAILED_PRECONDITION, `--require-sandbox: bubblewrap cannot run here: ${probe.reason}`);
    else log.warn({ reason: probe.reason }, 'bubblewrap unavailable: running actions in plain per-action directories (use --require-sandbox to refuse)');
  }
  if (o.faultInject) {
    log.warn({ fault: o.faultInject }, `FAULT INJECTION ON (--fault-inject ${o.faultInject}): this node deliberately returns corrupted results; for tests only, never run it in a real cluster`);
  }
  const metrics = createNodeMetrics({ slots: o.slots });
  const remote = createMeteredBlobStore(createGrpcBlobStore({ address: o.head, credentials: clientAuth.credentials, channelOptions: clientAuth.channelOptions }), metrics.headCas);
  // A cache of the head's CAS (which keeps every result durably): no flush per blob. A blob a
  // crash cut short is seen as absent and fetched again.
  const casDir = path.join(o.workDir, 'cas');
  const keepMs = o.cacheKeepMs ?? DEFAULT_KEEP_MS;
  let trimmer: StoreTrimmer | undefined;
  // Counted as written for the trimmer: a busy node is trimmed as its CAS grows, not only every 10 minutes.
  const local = createMeteredBlobStore(createDiskBlobStore(casDir, { durable: false, syncIo: true, touchAfterMs: touchAfterFor(keepMs) }), {
    written: (n) => trimmer?.wrote(n),
  });
  // Template trees from an earlier run are stale: exec roots start from a fresh one.
  const templates = path.join(o.workDir, 'templates');
  await rm(templates, { recursive: true, force: true });
  // Peer transfers: this node serves its CAS to the others and reads their outputs there.
  let peerToken: string | undefined;
  const peerEndpoint = o.peerPort !== undefined ? await startPeerEndpoint({ host: o.host ?? '127.0.0.1', port: o.peerPort, store: local, token: () => peerToken }) : undefined;
  const peers = peerEndpoint ? createPeerFetcher({ token: () => peerToken }) : undefined;
  const roots = createExecRootCache({ local, dir: templates, leaseDir: actionsDir });
  const executor = metrics.meter(createExecutor({
    onIdle: () => trimmer?.maybeReady(),
    local,
    peers,
    roots,
    remote: o.faultInject === 'corrupt-outputs' ? createCorruptingBlobStore(remote, log) : remote,
    runner,
    workDir: actionsDir,
    nodeId,
    clock: systemClock,
    log,
    // The digests of the tools actions name, by stat (kept in memory: a few binaries, each hashed
    // again only when its stat changes, as when the compiler is upgraded under a running node).
    tools: createToolCheck(createToolResolver(createStatCache(path.join(o.workDir, 'tool-digests.json')), { remember: false, companionsFile: path.join(o.workDir, 'toolchains.json') }), nodeId),
  }));
  const signal = daemonSignal(log);
  // The local CAS kept within --cache-size: trimmed only while no action runs, after dropping
  // the template and exec roots (which rely on its blobs); a trim skipped while busy runs when
  // the last action ends (cas/store-trim.ts). Skipped while the CAS is over its size, the node
  // drains: it asks the head for no new actions until the running ones end and it trimmed.
  let draining = false;
  let loop: WorkerLoop | undefined;
  trimmer = startStoreTrimmer({
    dir: casDir,
    maxBytes: o.cacheMaxBytes ?? 20 * 2 ** 30,
    keepMs,
    everyMs: 600_000,
    log,
    signal,
    ready: () => executor.busy() === 0 && roots.reset(),
    overdue() {
      if (draining) return;
      draining = true;
      log.info({ running: executor.busy() }, 'the local CAS is over its size: taking no new actions until the running ones end, to trim it');
      loop?.beat();
    },
    onTrim() {
      if (!draining) return;
      draining = false;
      log.info('trimmed the local CAS: taking actions again');
      loop?.beat();
    },
  });
  log.info({ nodeId, head: o.head, slots: o.slots, sandbox: runner.kind, processLimit: pids ? o.maxProcesses : 'none' }, 'node starting');
  const address = peerEndpoint ? (o.peerAddress ?? peerEndpoint.address) : '';
  if (peerEndpoint) log.info({ address, listening: peerEndpoint.address }, 'serving this node\'s CAS to peers');
  loop = startWorkerLoop({ headAddress: o.head, credentials: clientAuth.credentials, channelOptions: clientAuth.channelOptions, nodeId, slots: o.slots, address, executor, log, signal, onPeerToken: (t) => (peerToken = t), draining: () => draining });
  const endpoints = await startNodeEndpoints({ host: o.host ?? '127.0.0.1', metricsPort: o.metricsPort, healthPort: o.healthPort, metrics: metrics.registry, isServing: () => loop.connected() && !signal.aborted });
  // Tests and scripts read these lines to learn the ports when 0 was given.
  if (endpoints.metricsUrl) process.stdout.write(`orion node metrics on ${endpoints.metricsUrl}/metrics\n`);
  if (endpoints.healthAddress) process.stdout.write(`orion node health on ${endpoints.healthAddress}\n`);
  try {
    await loop.done;
  } finally {
    // Also when the head refused this node: nothing may keep the process alive.
    roots.close();
    await endpoints.close();
    remote.close();
    peers?.close();
    await peerEndpoint?.close();
    await pidsRunner?.close();
  }
  log.info('node stopped');
}
