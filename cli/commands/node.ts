import os from 'node:os';
import path from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { credentials } from '@grpc/grpc-js';
import { systemClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { createLogger } from '../../common/logger.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { createGrpcBlobStore } from '../../proto/grpc-blob-store.js';
import { createExecutor } from '../../node/executor.js';
import { startWorkerLoop } from '../../node/worker.js';
import { createProcessRunner, type ActionRunner } from '../../sandbox/runner.js';
import { createBwrapRunner, probeBwrap } from '../../sandbox/bwrap-runner.js';
import { daemonSignal } from '../signals.js';

export interface NodeCommandOptions {
  head: string;
  slots: number;
  workDir: string;
  id?: string;
  sandbox: 'auto' | 'require' | 'off';
  logLevel: string;
}

export async function runNode(o: NodeCommandOptions): Promise<void> {
  const log = createLogger({ level: o.logLevel, name: 'orion-node' });
  const nodeId = o.id ?? `${os.hostname()}-${process.pid}`;
  await mkdir(o.workDir, { recursive: true });
  const actionsDir = path.join(o.workDir, 'actions');
  // Directories left by a previous run that was killed are removed before starting.
  await rm(actionsDir, { recursive: true, force: true });
  await mkdir(actionsDir, { recursive: true });
  let runner: ActionRunner = createProcessRunner();
  if (o.sandbox !== 'off') {
    const probe = await probeBwrap();
    if (probe.ok) runner = createBwrapRunner(runner);
    else if (o.sandbox === 'require') throw new OrionError(Code.FAILED_PRECONDITION, `--require-sandbox: bubblewrap cannot run here: ${probe.reason}`);
    else log.warn({ reason: probe.reason }, 'bubblewrap unavailable: running actions in plain per-action directories (use --require-sandbox to refuse)');
  }
  const remote = createGrpcBlobStore({ address: o.head, credentials: credentials.createInsecure() });
  const executor = createExecutor({
    local: createDiskBlobStore(path.join(o.workDir, 'cas')),
    remote,
    runner,
    workDir: actionsDir,
    nodeId,
    clock: systemClock,
    log,
  });
  const signal = daemonSignal(log);
  log.info({ nodeId, head: o.head, slots: o.slots, sandbox: runner.kind }, 'node starting');
  const loop = startWorkerLoop({ headAddress: o.head, credentials: credentials.createInsecure(), nodeId, slots: o.slots, address: '', executor, log, signal });
  await loop.done;
  remote.close();
  log.info('node stopped');
}
