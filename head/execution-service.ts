import type { ServerWritableStream } from '@grpc/grpc-js';
import {
  Action as PbAction,
  Command as PbCommand,
  ExecuteOperationMetadata,
  ExecuteResponse,
  ExecutionStage_Value,
  type ExecuteRequest,
  type ExecutionServer,
  type WaitExecutionRequest,
} from '../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import type { Operation } from '../proto/gen/google/longrunning/operations.js';
import { Code, OrionError, statusOf, wrap } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../cas/blob-store.js';
import { digestKey } from '../cas/digest.js';
import type { Command, Digest } from '../cas/types.js';
import { actionFromPb, actionResultToPb, commandFromPb, digestFromPb, digestToPb, statusToPb } from '../proto/convert.js';
import { serverStream } from '../proto/grpc-status.js';
import { EXEC_ROOT_HEADER } from '../common/platform-properties.js';
import { parseDigest } from '../cas/digest.js';
import type { InstanceCaches } from './instance-caches.js';
import type { Execution, ExecutionRequest, Scheduler } from './scheduler.js';
import { validateInputTree } from './input-tree.js';
import { DEFAULT_HEAD_LIMITS, type HeadLimits } from './limits.js';
import type { BuildTracker } from './build-tracker.js';
import { requestInfo } from './request-info.js';
import { BUILD_ID_HEADER } from '../common/request-headers.js';
import { callerOf, type Principal } from './auth.js';

const METADATA_TYPE = 'type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata';
const RESPONSE_TYPE = 'type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse';

const STAGE: Record<Execution['stage'], ExecutionStage_Value> = {
  queued: ExecutionStage_Value.QUEUED,
  executing: ExecutionStage_Value.EXECUTING,
  completed: ExecutionStage_Value.COMPLETED,
};

export function operationOf(e: Execution): Operation {
  const metadata = ExecuteOperationMetadata.encode({
    stage: STAGE[e.stage],
    actionDigest: digestToPb(e.request.actionDigest),
    stdoutStreamName: '',
    stderrStreamName: '',
    // Which node runs it, so clients can show where their actions are.
    partialExecutionMetadata: e.stage === 'executing' && e.attempts.length > 0 ? { worker: e.attempts.at(-1)!.nodeId, queuedTimestamp: new Date(e.queuedAt), auxiliaryMetadata: [] } : undefined,
    digestFunction: 0,
  }).finish();
  const op: Operation = { name: e.name, metadata: { typeUrl: METADATA_TYPE, value: Buffer.from(metadata) }, done: false };
  if (e.stage === 'completed' && e.response) {
    const r = e.response;
    const response = ExecuteResponse.encode({
      result: r.result ? actionResultToPb(r.result) : undefined,
      cachedResult: r.cachedResult,
      status: statusToPb(r.status.code, r.status.message, r.status.missing),
      serverLogs: {},
      message: r.status.code === Code.OK ? '' : r.status.message,
    }).finish();
    op.done = true;
    op.response = { typeUrl: RESPONSE_TYPE, value: Buffer.from(response) };
  }
  return op;
}

/** Streams an execution's operations until it completes or the client goes away. */
/** Open Execute/WaitExecution streams per operation name. */
type StreamCounts = Map<string, number>;

function streamExecution(scheduler: Scheduler, name: string, call: ServerWritableStream<unknown, Operation>, streams: StreamCounts, cancelWhenAbandoned = false): Promise<void> {
  return new Promise((resolve) => {
    let unsubscribe: (() => void) | undefined;
    let open = true;
    streams.set(name, (streams.get(name) ?? 0) + 1);
    const finish = () => {
      unsubscribe?.();
      if (open) {
        open = false;
        const left = (streams.get(name) ?? 1) - 1;
        if (left > 0) streams.set(name, left);
        else streams.delete(name);
      }
      resolve();
    };
    call.on('cancelled', () => {
      finish();
      // An Orion build that went away (Ctrl-C) takes its work off the nodes, unless another
      // caller waits for the same action. REAPI clients such as Bazel may come back with
      // WaitExecution, so their operations keep running.
      if (cancelWhenAbandoned && !streams.has(name)) scheduler.cancel(name, 'the client cancelled the build');
    });
    unsubscribe = scheduler.watch(name, (e) => {
      if (call.cancelled) return;
      call.write(operationOf(e));
      if (e.stage === 'completed') finish();
    });
  });
}

export interface ExecutionServiceDeps {
  cas: BlobStore;
  caches: InstanceCaches;
  scheduler: Scheduler;
  log: Logger;
  /** Bounds on message, tree and timeout sizes (defaults: DEFAULT_HEAD_LIMITS). */
  limits?: Partial<ExecutionLimits>;
  /** Records each Execute under the build its caller named (metadata x-orion-build-id). */
  builds?: BuildTracker;
}

export type ExecutionLimits = Pick<HeadLimits, 'maxMessageBytes' | 'maxActionTimeoutMs' | 'maxInputTreeEntries' | 'maxInputTreeDepth'>;

/** Reads a message blob whole, refusing one too big to be a message before reading it. */
async function readMessage(cas: BlobStore, d: Digest, what: string, limits: Pick<HeadLimits, 'maxMessageBytes'>): Promise<Buffer> {
  if (d.sizeBytes > limits.maxMessageBytes) throw new OrionError(Code.INVALID_ARGUMENT, `${what} ${digestKey(d)} is ${d.sizeBytes} bytes; the limit for a message is ${limits.maxMessageBytes}`);
  try {
    return await cas.get(d);
  } catch (err) {
    if (statusOf(err) === Code.NOT_FOUND) {
      throw new OrionError(Code.FAILED_PRECONDITION, `${what} ${digestKey(d)} is not in the CAS`, { missing: [d] });
    }
    throw wrap(err, `reading ${what}`);
  }
}

/** Loads and validates a Command (arguments present, relative output paths and working directory). */
export async function loadCommand(cas: BlobStore, d: Digest, limits: Pick<HeadLimits, 'maxMessageBytes'> = DEFAULT_HEAD_LIMITS): Promise<Command> {
  const bytes = await readMessage(cas, d, 'command', limits);
  let command: Command;
  try {
    command = commandFromPb(PbCommand.decode(bytes));
  } catch (err) {
    throw new OrionError(Code.INVALID_ARGUMENT, `command ${digestKey(d)} is not a valid Command message: ${(err as Error).message}`);
  }
  if (command.arguments.length === 0) throw new OrionError(Code.INVALID_ARGUMENT, `command ${digestKey(d)} has no arguments`);
  for (const p of [...command.outputPaths, ...command.outputFiles, ...command.outputDirectories]) validateRelativePath(p, 'output path');
  if (command.workingDirectory) validateRelativePath(command.workingDirectory, 'working_directory');
  return command;
}

/** Loads and validates everything an Execute request names, or throws the REAPI error for it. */
export async function loadExecution(cas: BlobStore, instanceName: string, actionDigest: Digest, knownComplete: Set<string>, limits: ExecutionLimits = DEFAULT_HEAD_LIMITS): Promise<ExecutionRequest> {
  const bytes = await readMessage(cas, actionDigest, 'action', limits);
  let action;
  try {
    action = actionFromPb(PbAction.decode(bytes));
  } catch (err) {
    throw new OrionError(Code.INVALID_ARGUMENT, `action ${digestKey(actionDigest)} is not a valid Action message: ${(err as Error).message}`);
  }
  const command = await loadCommand(cas, action.commandDigest, limits);
  // REAPI: a timeout above the server's maximum MUST be rejected; none means "as long as the server allows".
  if (action.timeoutMs !== undefined && action.timeoutMs > limits.maxActionTimeoutMs) {
    throw new OrionError(Code.INVALID_ARGUMENT, `action ${digestKey(actionDigest)} asks for a timeout of ${action.timeoutMs} ms; this head allows at most ${limits.maxActionTimeoutMs} ms (--max-action-timeout)`);
  }
  action.timeoutMs ??= limits.maxActionTimeoutMs;
  await checkInputRoot(cas, action.inputRootDigest, knownComplete, limits);
  return { instanceName, actionDigest, action, command };
}

export function validateRelativePath(p: string, what: string): void {
  if (p.startsWith('/') || p.includes('\0') || p.split('/').some((s) => s === '..' || s === '')) {
    throw new OrionError(Code.INVALID_ARGUMENT, `${what} ${JSON.stringify(p)} must be a relative path without '..', empty segments or NUL`);
  }
}

/** Every directory and file of an input root must be in the CAS, and the tree valid (input-tree.ts), before it runs. */
export async function checkInputRoot(cas: BlobStore, root: Digest, knownComplete: Set<string>, limits: ExecutionLimits = DEFAULT_HEAD_LIMITS): Promise<void> {
  const key = digestKey(root);
  if (knownComplete.has(key)) return;
  const tree = await validateInputTree(cas, root, { maxEntries: limits.maxInputTreeEntries, maxDepth: limits.maxInputTreeDepth, maxDirectoryBytes: limits.maxMessageBytes });
  const missing = await cas.findMissing(tree.fileDigests);
  if (missing.length > 0) {
    throw new OrionError(Code.FAILED_PRECONDITION, `input root ${key} is missing ${missing.length} blob(s) in the CAS`, { missing });
  }
  if (knownComplete.size > 10_000) knownComplete.clear();
  knownComplete.add(key);
}

/**
 * Who may WaitExecution on each operation: the identities that Executed it (identical
 * in-flight actions share one execution, so several). Keyed by the scheduler's Execution
 * object, so an entry goes when the scheduler forgets the execution.
 */
type OperationOwners = WeakMap<Execution, Set<string>>;

function addOwner(owners: OperationOwners, e: Execution, caller: Principal | undefined): void {
  if (!caller || caller.role === 'anonymous') return;
  let set = owners.get(e);
  if (!set) owners.set(e, (set = new Set()));
  set.add(caller.identity);
}

/** Without authentication everyone may watch everything; with it, the identities that Executed it and admins. */
function mayWatch(owners: OperationOwners, e: Execution, caller: Principal | undefined): boolean {
  if (!caller || caller.role === 'anonymous' || caller.role === 'admin') return true;
  return owners.get(e)?.has(caller.identity) ?? false;
}

export function createExecutionService(deps: ExecutionServiceDeps): ExecutionServer {
  const knownComplete = new Set<string>();
  const streams: StreamCounts = new Map();
  const owners: OperationOwners = new WeakMap();
  const limits: ExecutionLimits = { ...DEFAULT_HEAD_LIMITS, ...deps.limits };
  return {
    execute: serverStream(async (req: ExecuteRequest, call) => {
      const actionDigest = digestFromPb(req.actionDigest, 'action_digest');
      const request = await loadExecution(deps.cas, req.instanceName, actionDigest, knownComplete, limits);
      if (req.executionPolicy?.priority) request.priority = req.executionPolicy.priority;
      const info = requestInfo(call.metadata);
      if (info) request.buildId = info.buildId;
      // Orion clients run compiles in the whole project tree (global source context).
      const execRoot = call.metadata.get(EXEC_ROOT_HEADER)[0];
      if (execRoot !== undefined) {
        const m = /^([^/]+)\/(\d+)$/.exec(String(execRoot));
        if (!m) throw new OrionError(Code.INVALID_ARGUMENT, `${EXEC_ROOT_HEADER} must be HASH/SIZE, got ${JSON.stringify(String(execRoot).slice(0, 200))}`);
        request.execRootDigest = parseDigest(m[1]!, Number(m[2]));
        await checkInputRoot(deps.cas, request.execRootDigest, knownComplete, limits);
      }
      if (!req.skipCacheLookup && !request.action.doNotCache) {
        const cached = await deps.caches.forInstance(req.instanceName).get(actionDigest);
        if (cached) {
          const e = deps.scheduler.completed(request, { result: cached, cachedResult: true, status: { code: Code.OK, message: '' } });
          addOwner(owners, e, callerOf(call.metadata));
          deps.builds?.execution(e, info);
          call.write(operationOf(e));
          return;
        }
      }
      const e = deps.scheduler.enqueue(request);
      addOwner(owners, e, callerOf(call.metadata));
      deps.builds?.execution(e, info);
      deps.log.debug({ operation: e.name, actionDigest: actionDigest.hash, ...(info ? { buildId: info.buildId } : {}) }, 'action queued');
      await streamExecution(deps.scheduler, e.name, call, streams, call.metadata.get(BUILD_ID_HEADER).length > 0);
    }),
    waitExecution: serverStream(async (req: WaitExecutionRequest, call) => {
      const e = deps.scheduler.get(req.name);
      // Another identity's operation looks exactly like one that does not exist: names are no oracle.
      if (!e || !mayWatch(owners, e, callerOf(call.metadata))) throw new OrionError(Code.NOT_FOUND, `unknown operation ${JSON.stringify(req.name)}`);
      await streamExecution(deps.scheduler, req.name, call, streams);
    }),
  };
}
