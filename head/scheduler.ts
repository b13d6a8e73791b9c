import { randomUUID } from 'node:crypto';
import type { Clock } from '../common/clock.js';
import { Code, OrionError, codeName, type MissingBlob } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Action, ActionResult, Command, Digest } from '../cas/types.js';
import type { NodeRecord, NodeRegistry } from './node-registry.js';

export type Stage = 'queued' | 'executing' | 'completed';

export interface ExecutionRequest {
  instanceName: string;
  actionDigest: Digest;
  action: Action;
  command: Command;
  /** Orion's global source context: run in this input root, key the result by actionDigest. */
  execRootDigest?: Digest;
}

export interface ExecutionStatus {
  code: number;
  message: string;
  missing?: MissingBlob[];
}

export interface ExecutionResponse {
  result?: ActionResult;
  cachedResult: boolean;
  status: ExecutionStatus;
}

export interface Attempt {
  assignmentId: string;
  nodeId: string;
  startedAt: number;
  endedAt?: number;
  outcome?: string;
}

export interface Execution {
  /** The google.longrunning.Operation name. */
  name: string;
  request: ExecutionRequest;
  stage: Stage;
  queuedAt: number;
  attempts: Attempt[];
  response?: ExecutionResponse;
}

/** What the head sends down a node's Connect stream, in domain terms. */
export type NodeCommand =
  | { type: 'assign'; assignmentId: string; execution: Execution }
  | { type: 'cancel'; assignmentId: string };

export type AttemptOutcome = { ok: true; result: ActionResult } | { ok: false; error: OrionError };

export interface SchedulerDeps {
  registry: NodeRegistry;
  clock: Clock;
  log: Logger;
  /** Delivers a command to a connected node; returns false when the node cannot take it. */
  send(nodeId: string, cmd: NodeCommand): boolean;
  /**
   * Accepts a node's successful result: verifies its blobs and writes the action cache.
   * Throws (e.g. DATA_LOSS) when the node's result cannot be trusted; the action is then re-run.
   */
  acceptResult(execution: Execution, result: ActionResult, nodeId: string): Promise<ActionResult>;
  maxAttempts?: number;
}

export interface Scheduler {
  /** Queues an execution (or joins an identical one already in flight). */
  enqueue(req: ExecutionRequest): Execution;
  /** Records an execution that finished without running (cache hit, or rejected up front). */
  completed(req: ExecutionRequest, response: ExecutionResponse): Execution;
  get(name: string): Execution | undefined;
  /** Calls fn now and on every stage change until the execution completes. Returns an unsubscribe. */
  watch(name: string, fn: (e: Execution) => void): () => void;
  /** A node reports the end of an assignment. */
  finished(nodeId: string, assignmentId: string, outcome: AttemptOutcome): Promise<void>;
  queueLength(): number;
  runningCount(): number;
  /** Tries to place queued work on free slots. */
  dispatch(): void;
}

const COMPLETED_RETENTION = 10_000;

export function createScheduler(deps: SchedulerDeps): Scheduler {
  const maxAttempts = deps.maxAttempts ?? 3;
  const executions = new Map<string, Execution>();
  const inFlightByKey = new Map<string, Execution>();
  const watchers = new Map<string, Set<(e: Execution) => void>>();
  const queue: Execution[] = [];
  /** assignmentId -> execution */
  const assignments = new Map<string, { execution: Execution; nodeId: string }>();
  const completedOrder: string[] = [];

  const keyOf = (r: ExecutionRequest) =>
    `${r.instanceName}\u0000${r.actionDigest.hash}/${r.actionDigest.sizeBytes}\u0000${r.execRootDigest?.hash ?? ''}`;

  function notify(e: Execution) {
    for (const fn of [...(watchers.get(e.name) ?? [])]) fn(e);
    if (e.stage === 'completed') watchers.delete(e.name);
  }

  function remember(e: Execution) {
    executions.set(e.name, e);
  }

  function complete(e: Execution, response: ExecutionResponse) {
    e.stage = 'completed';
    e.response = response;
    inFlightByKey.delete(keyOf(e.request));
    completedOrder.push(e.name);
    while (completedOrder.length > COMPLETED_RETENTION) executions.delete(completedOrder.shift()!);
    notify(e);
  }

  function describeAttempts(e: Execution): string {
    return e.attempts.map((a, i) => `attempt ${i + 1} on ${a.nodeId}: ${a.outcome ?? 'no outcome'}`).join('; ');
  }

  function requeueOrFail(e: Execution, reason: string) {
    if (e.attempts.length >= maxAttempts) {
      const argv0 = e.request.command.arguments.slice(0, 3).join(' ');
      complete(e, {
        cachedResult: false,
        status: {
          code: Code.UNAVAILABLE,
          message: `action ${e.request.actionDigest.hash}/${e.request.actionDigest.sizeBytes} (${argv0} ...) failed ${e.attempts.length} times, giving up: ${describeAttempts(e)}`,
        },
      });
      return;
    }
    deps.log.warn({ execution: e.name, reason }, 'requeueing action');
    e.stage = 'queued';
    queue.unshift(e);
    notify(e);
  }

  /**
   * The least-loaded node with a free slot, preferring nodes this execution has not
   * been tried on yet (a node that lost or botched it should not get the retry when
   * another can take it). Nodes in `skip` could not take an assignment just now.
   */
  function pickNode(e: Execution, skip: Set<string>): NodeRecord | undefined {
    const tried = new Set(e.attempts.map((a) => a.nodeId));
    let best: NodeRecord | undefined;
    let bestScore = Infinity;
    for (const n of deps.registry.withFreeSlots()) {
      if (skip.has(n.nodeId)) continue;
      // Load is below 1 for a node with a free slot, so an untried node always wins.
      const score = (tried.has(n.nodeId) ? 1 : 0) + n.running.size / n.slots;
      if (score < bestScore) {
        best = n;
        bestScore = score;
      }
    }
    return best;
  }

  function dispatch() {
    const unreachable = new Set<string>();
    while (queue.length > 0) {
      const e = queue[0]!;
      const node = pickNode(e, unreachable);
      if (!node) return;
      queue.shift();
      const assignmentId = `${e.name}/${e.attempts.length + 1}`;
      const attempt: Attempt = { assignmentId, nodeId: node.nodeId, startedAt: deps.clock.now() };
      e.attempts.push(attempt);
      node.running.add(assignmentId);
      assignments.set(assignmentId, { execution: e, nodeId: node.nodeId });
      e.stage = 'executing';
      if (!deps.send(node.nodeId, { type: 'assign', assignmentId, execution: e })) {
        // That node's stream is gone; keep the work at the front and try the other nodes.
        node.running.delete(assignmentId);
        assignments.delete(assignmentId);
        e.attempts.pop();
        e.stage = 'queued';
        queue.unshift(e);
        unreachable.add(node.nodeId);
        continue;
      }
      notify(e);
    }
  }

  deps.registry.on('lost', (nodeId, reason) => {
    const node = deps.registry.get(nodeId);
    const lostIds = node ? [...node.running] : [];
    if (node) node.running.clear();
    for (const id of lostIds) {
      const a = assignments.get(id);
      if (!a) continue;
      assignments.delete(id);
      const attempt = a.execution.attempts.find((x) => x.assignmentId === id);
      if (attempt) {
        attempt.endedAt = deps.clock.now();
        attempt.outcome = `node lost (${reason})`;
      }
      // A node that only missed heartbeats may still be running it: stop the duplicate.
      deps.send(nodeId, { type: 'cancel', assignmentId: id });
      requeueOrFail(a.execution, `node ${nodeId} lost: ${reason}`);
    }
    dispatch();
  });
  deps.registry.on('available', () => dispatch());

  return {
    enqueue(req) {
      const key = keyOf(req);
      const existing = inFlightByKey.get(key);
      if (existing) return existing;
      const e: Execution = { name: randomUUID(), request: req, stage: 'queued', queuedAt: deps.clock.now(), attempts: [] };
      remember(e);
      inFlightByKey.set(key, e);
      queue.push(e);
      dispatch();
      return e;
    },
    completed(req, response) {
      const e: Execution = { name: randomUUID(), request: req, stage: 'queued', queuedAt: deps.clock.now(), attempts: [] };
      remember(e);
      complete(e, response);
      return e;
    },
    get: (name) => executions.get(name),
    watch(name, fn) {
      const e = executions.get(name);
      if (!e) throw new OrionError(Code.NOT_FOUND, `unknown operation ${JSON.stringify(name)}`);
      fn(e);
      if (e.stage === 'completed') return () => {};
      let set = watchers.get(name);
      if (!set) watchers.set(name, (set = new Set()));
      set.add(fn);
      return () => set!.delete(fn);
    },
    async finished(nodeId, assignmentId, outcome) {
      const a = assignments.get(assignmentId);
      if (!a || a.nodeId !== nodeId) {
        deps.log.warn({ nodeId, assignmentId }, 'discarding result for an assignment that is no longer current');
        return;
      }
      assignments.delete(assignmentId);
      deps.registry.get(nodeId)?.running.delete(assignmentId);
      const e = a.execution;
      const attempt = e.attempts.find((x) => x.assignmentId === assignmentId)!;
      attempt.endedAt = deps.clock.now();
      if (!outcome.ok) {
        attempt.outcome = `${codeName(outcome.error.code)}: ${outcome.error.message}`;
        // Missing inputs and timeouts are deterministic: report them instead of retrying.
        const retry = outcome.error.code === Code.UNAVAILABLE || outcome.error.code === Code.INTERNAL || outcome.error.code === Code.UNKNOWN;
        if (retry) requeueOrFail(e, attempt.outcome);
        else complete(e, { cachedResult: false, status: { code: outcome.error.code, message: outcome.error.message, missing: outcome.error.missing } });
        dispatch();
        return;
      }
      try {
        const accepted = await deps.acceptResult(e, outcome.result, nodeId);
        attempt.outcome = `exit ${accepted.exitCode}`;
        complete(e, { result: accepted, cachedResult: false, status: { code: Code.OK, message: '' } });
      } catch (err) {
        const error = err instanceof OrionError ? err : new OrionError(Code.INTERNAL, String(err));
        attempt.outcome = `result rejected: ${error.message}`;
        requeueOrFail(e, attempt.outcome);
      }
      dispatch();
    },
    queueLength: () => queue.length,
    runningCount: () => assignments.size,
    dispatch,
  };
}
