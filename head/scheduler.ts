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
  /** The client's build id (metadata x-orion-build-id), carried to the node for its logs. */
  buildId?: string;
  /** REAPI ExecutionPolicy.priority: lower runs sooner (Orion clients send minus the critical path). */
  priority?: number;
  /** Bytes of this action's inputs each node already holds (DAG builds: the producers' nodes). */
  localityBytes?: Map<string, number>;
  /** Inputs other nodes produced (and hold): the node fetches them there first. */
  peerSources?: { digest: Digest; nodeId: string }[];
}

export interface ExecutionStatus {
  code: number;
  message: string;
  missing?: MissingBlob[];
  /** No node runs the compiler the action's key names (this path, the client's): the client may run it. */
  toolchain?: string;
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
  /** Input bytes the node fetched from peers and from the head for this attempt. */
  peerBytes?: number;
  headBytes?: number;
}

export interface Execution {
  /** The google.longrunning.Operation name. */
  name: string;
  request: ExecutionRequest;
  stage: Stage;
  queuedAt: number;
  attempts: Attempt[];
  /** Nodes that refused it because their compiler is not the one its key names (node/tool-check.ts), and that compiler. */
  unsuitable?: Set<string>;
  toolchain?: string;
  response?: ExecutionResponse;
  /** A retry waits until then (jittered exponential backoff). */
  notBefore?: number;
  seq: number;
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
  /** Delay before the second retry; doubles per attempt, jittered to 50-100%. The first retry is immediate; 0 disables backoff. */
  retryBackoffMs?: number;
  random?: () => number;
  /** Speculative copies: start one when an action runs this many times its expected duration... */
  stragglerFactor?: number;
  /** ...and at least this long (ms). */
  stragglerMinMs?: number;
}

export interface Scheduler {
  /** Queues an execution (or joins an identical one already in flight). */
  enqueue(req: ExecutionRequest): Execution;
  /** Records an execution that finished without running (cache hit, or rejected up front). */
  completed(req: ExecutionRequest, response: ExecutionResponse): Execution;
  get(name: string): Execution | undefined;
  /** Calls fn now and on every stage change until the execution completes. Returns an unsubscribe. */
  watch(name: string, fn: (e: Execution) => void): () => void;
  /** A node reports the end of an assignment (with the input bytes it moved, when it says). */
  finished(nodeId: string, assignmentId: string, outcome: AttemptOutcome, transfer?: { peerBytes: number; headBytes: number }): Promise<void>;
  queueLength(): number;
  runningCount(): number;
  /** Tries to place queued work on free slots. */
  dispatch(): void;
  /** Stops an execution: off the queue, or cancelled on the nodes running it; completes with CANCELLED. */
  cancel(name: string, reason: string): void;
  /** Starts speculative copies of stragglers when slots are free (the head calls it periodically). */
  checkStragglers(): void;
  /** Expected duration (ms) of an action with this command, from earlier runs. */
  expectedDuration(commandHash: string): number | undefined;
}

const COMPLETED_RETENTION = 10_000;

interface RunQueue {
  readonly length: number;
  at(i: number): Execution;
  /** Inserts in order: after every entry `e` is not `before`. */
  insert(e: Execution): void;
  insertAt(i: number, e: Execution): void;
  removeAt(i: number): void;
  indexOf(e: Execution): number;
  some(fn: (e: Execution) => boolean): boolean;
}

/**
 * Queued executions in dispatch order: an array with a moving start, since dispatch takes from the
 * front, where Array.splice(0, 1) moved every other entry (20,000 queued no-op actions: ~0.75 s of
 * the head's main thread per build).
 */
function createRunQueue(before: (a: Execution, b: Execution) => boolean): RunQueue {
  let items: (Execution | undefined)[] = [];
  let start = 0;
  const q: RunQueue = {
    get length() {
      return items.length - start;
    },
    at: (i) => items[start + i]!,
    insert(e) {
      let i = items.length;
      while (i > start && before(e, items[i - 1]!)) i--;
      q.insertAt(i - start, e);
    },
    insertAt(i, e) {
      if (i === 0 && start > 0) items[--start] = e;
      else items.splice(start + i, 0, e);
    },
    removeAt(i) {
      if (i !== 0) {
        items.splice(start + i, 1);
        return;
      }
      items[start++] = undefined;
      if (start === items.length) {
        items = [];
        start = 0;
      } else if (start > 1024 && start * 2 > items.length) {
        items = items.slice(start);
        start = 0;
      }
    },
    indexOf(e) {
      const i = items.indexOf(e, start);
      return i < 0 ? -1 : i - start;
    },
    some(fn) {
      for (let i = start; i < items.length; i++) if (fn(items[i]!)) return true;
      return false;
    },
  };
  return q;
}
const RECENT_ROOTS = 16;

export function createScheduler(deps: SchedulerDeps): Scheduler {
  const maxAttempts = deps.maxAttempts ?? 3;
  const backoffMs = deps.retryBackoffMs ?? 0;
  const random = deps.random ?? Math.random;
  const stragglerFactor = deps.stragglerFactor ?? 3;
  const stragglerMinMs = deps.stragglerMinMs ?? 2000;
  const executions = new Map<string, Execution>();
  const inFlightByKey = new Map<string, Execution>();
  const watchers = new Map<string, Set<(e: Execution) => void>>();
  /** Queued executions, kept sorted by (priority, retries first, arrival). */
  const queue = createRunQueue(before);
  const assignments = new Map<string, { execution: Execution; nodeId: string }>();
  const completedOrder: string[] = [];
  /** Input roots each node ran recently: it holds their blobs, so it fetches least. */
  const recentRoots = new Map<string, string[]>();
  /** Exponentially weighted mean duration by command digest. */
  const durations = new Map<string, number>();
  let seq = 0;
  let wakeup: { at: number; cancel(): void } | undefined;

  const keyOf = (r: ExecutionRequest) =>
    `${r.instanceName}\u0000${r.actionDigest.hash}/${r.actionDigest.sizeBytes}\u0000${r.execRootDigest?.hash ?? ''}`;
  const rootOf = (e: Execution) => (e.request.execRootDigest ?? e.request.action.inputRootDigest).hash;
  const runningCopies = (e: Execution) => e.attempts.filter((at) => assignments.get(at.assignmentId)?.execution === e).map((at) => ({ id: at.assignmentId, nodeId: at.nodeId }));

  function before(a: Execution, b: Execution): boolean {
    const pa = a.request.priority ?? 0;
    const pb = b.request.priority ?? 0;
    if (pa !== pb) return pa < pb;
    return a.seq < b.seq;
  }

  function notify(e: Execution) {
    for (const fn of [...(watchers.get(e.name) ?? [])]) fn(e);
    if (e.stage === 'completed') watchers.delete(e.name);
  }

  function complete(e: Execution, response: ExecutionResponse) {
    const wasQueued = e.stage === 'queued';
    e.stage = 'completed';
    e.response = response;
    const key = keyOf(e.request);
    if (inFlightByKey.get(key) === e) inFlightByKey.delete(key);
    const qi = wasQueued ? queue.indexOf(e) : -1;
    if (qi >= 0) queue.removeAt(qi);
    // The first result wins: cancel any other copy still running.
    for (const copy of runningCopies(e)) {
      assignments.delete(copy.id);
      deps.registry.get(copy.nodeId)?.running.delete(copy.id);
      const attempt = e.attempts.find((x) => x.assignmentId === copy.id);
      if (attempt && !attempt.outcome) {
        attempt.endedAt = deps.clock.now();
        attempt.outcome = 'cancelled: another copy finished first';
      }
      deps.send(copy.nodeId, { type: 'cancel', assignmentId: copy.id });
    }
    completedOrder.push(e.name);
    while (completedOrder.length > COMPLETED_RETENTION) executions.delete(completedOrder.shift()!);
    notify(e);
  }

  function describeAttempts(e: Execution): string {
    return e.attempts.map((a, i) => `attempt ${i + 1} on ${a.nodeId}: ${a.outcome ?? 'no outcome'}`).join('; ');
  }

  function requeueOrFail(e: Execution, reason: string) {
    if (e.stage === 'completed') return;
    // Another copy (speculative, or the original) is still running: let it finish.
    if (runningCopies(e).length > 0) return;
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
    // The first retry goes out at once (a lost node is not the action's fault); an action
    // failing again backs off exponentially, jittered, so a crash-looping one cannot spin.
    const delay = backoffMs > 0 && e.attempts.length >= 2 ? backoffMs * 2 ** (e.attempts.length - 2) * (0.5 + random() / 2) : 0;
    deps.log.warn({ execution: e.name, reason, retryInMs: Math.round(delay) }, 'requeueing action');
    e.stage = 'queued';
    e.notBefore = delay > 0 ? deps.clock.now() + delay : undefined;
    queue.insert(e);
    notify(e);
  }

  /**
   * The node for `e`: never one it already runs on; preferring nodes this execution has
   * not been tried on (a node that lost or botched it should not get the retry when
   * another can take it), then the node holding most of its input bytes, or one that ran the same input root recently (it holds
   * the blobs), then the least loaded. Nodes in `skip` could not take work just now.
   */
  function pickNode(e: Execution, skip: Set<string>): NodeRecord | undefined {
    const tried = new Set(e.attempts.map((a) => a.nodeId));
    const busy = new Set(runningCopies(e).map((c) => c.nodeId));
    const root = rootOf(e);
    const held = e.request.localityBytes;
    const heldTotal = held ? [...held.values()].reduce((x, y) => x + y, 0) : 0;
    let best: NodeRecord | undefined;
    let bestScore = Infinity;
    for (const n of deps.registry.withFreeSlots()) {
      if (skip.has(n.nodeId) || busy.has(n.nodeId) || e.unsuitable?.has(n.nodeId)) continue;
      // A node holding more of the inputs fetches less; else one that ran the same root recently.
      const warm = heldTotal > 0 ? 0.5 * (1 - (held!.get(n.nodeId) ?? 0) / heldTotal) : recentRoots.get(n.nodeId)?.includes(root) ? 0 : 0.5;
      const score = (tried.has(n.nodeId) ? 2 : 0) + warm + n.running.size / n.slots;
      if (score < bestScore) {
        best = n;
        bestScore = score;
      }
    }
    return best;
  }

  function assign(e: Execution, node: NodeRecord): boolean {
    const assignmentId = `${e.name}/${e.attempts.length + 1}`;
    const attempt: Attempt = { assignmentId, nodeId: node.nodeId, startedAt: deps.clock.now() };
    e.attempts.push(attempt);
    node.running.add(assignmentId);
    assignments.set(assignmentId, { execution: e, nodeId: node.nodeId });
    const wasStage = e.stage;
    e.stage = 'executing';
    if (!deps.send(node.nodeId, { type: 'assign', assignmentId, execution: e })) {
      node.running.delete(assignmentId);
      assignments.delete(assignmentId);
      e.attempts.pop();
      e.stage = wasStage;
      return false;
    }
    const roots = recentRoots.get(node.nodeId) ?? [];
    const root = rootOf(e);
    recentRoots.set(node.nodeId, [root, ...roots.filter((r) => r !== root)].slice(0, RECENT_ROOTS));
    if (wasStage !== 'executing') notify(e);
    return true;
  }

  function scheduleWakeup(at: number) {
    if (wakeup && wakeup.at <= at) return;
    wakeup?.cancel();
    const timer = deps.clock.setTimeout(() => {
      wakeup = undefined;
      dispatch();
    }, Math.max(0, at - deps.clock.now()));
    wakeup = { at, cancel: timer.cancel };
  }

  /** Whether an active node is left that did not refuse `e` for its compiler. */
  function hasSuitableNode(e: Execution): boolean {
    return deps.registry.list('active').some((n) => !n.quarantined && !e.unsuitable?.has(n.nodeId));
  }

  function failUnsuitable(e: Execution) {
    complete(e, { cachedResult: false, status: { code: Code.FAILED_PRECONDITION, message: `no node runs the compiler this action's key names (${e.toolchain}): ${describeAttempts(e)}`, toolchain: e.toolchain } });
  }

  function dispatch() {
    const unreachable = new Set<string>();
    const now = deps.clock.now();
    let earliestWait = Infinity;
    for (let i = 0; i < queue.length; ) {
      const e = queue.at(i);
      if (e.notBefore !== undefined && e.notBefore > now) {
        earliestWait = Math.min(earliestWait, e.notBefore);
        i++;
        continue;
      }
      const node = pickNode(e, unreachable);
      if (!node) {
        // Every node left refused it for its compiler (the ones that had it were lost).
        if (e.unsuitable && !hasSuitableNode(e)) {
          queue.removeAt(i);
          failUnsuitable(e);
          continue;
        }
        break;
      }
      queue.removeAt(i);
      if (!assign(e, node)) {
        // That node's stream is gone; keep the work in place and try the other nodes.
        queue.insertAt(i, e);
        unreachable.add(node.nodeId);
        continue;
      }
      e.notBefore = undefined;
    }
    if (earliestWait < Infinity) scheduleWakeup(earliestWait);
  }

  deps.registry.on('lost', (nodeId, reason) => {
    const node = deps.registry.get(nodeId);
    const lostIds = node ? [...node.running] : [];
    if (node) node.running.clear();
    recentRoots.delete(nodeId);
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

  function recordDuration(e: Execution, ms: number) {
    const k = e.request.action.commandDigest.hash;
    const prev = durations.get(k);
    durations.set(k, prev === undefined ? ms : prev * 0.7 + ms * 0.3);
  }

  return {
    enqueue(req) {
      const key = keyOf(req);
      const existing = inFlightByKey.get(key);
      if (existing) return existing;
      const e: Execution = { name: randomUUID(), request: req, stage: 'queued', queuedAt: deps.clock.now(), attempts: [], seq: seq++ };
      executions.set(e.name, e);
      inFlightByKey.set(key, e);
      queue.insert(e);
      dispatch();
      return e;
    },
    completed(req, response) {
      // Never queued: complete() has nothing to take off the queue.
      const e: Execution = { name: randomUUID(), request: req, stage: 'completed', queuedAt: deps.clock.now(), attempts: [], seq: seq++ };
      executions.set(e.name, e);
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
    async finished(nodeId, assignmentId, outcome, transfer) {
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
      if (transfer) {
        attempt.peerBytes = transfer.peerBytes;
        attempt.headBytes = transfer.headBytes;
      }
      if (e.stage === 'completed') {
        attempt.outcome ??= 'finished after another copy';
        dispatch();
        return;
      }
      if (!outcome.ok && outcome.error.toolchain !== undefined) {
        // That node's compiler is not the one the key names: another node's may be (no retry counted).
        attempt.outcome = `${codeName(outcome.error.code)}: ${outcome.error.message}`;
        (e.unsuitable ??= new Set()).add(nodeId);
        e.toolchain = outcome.error.toolchain;
        if (runningCopies(e).length === 0) {
          if (hasSuitableNode(e)) {
            e.stage = 'queued';
            queue.insert(e);
            notify(e);
          } else failUnsuitable(e);
        }
        dispatch();
        return;
      }
      if (!outcome.ok) {
        attempt.outcome = `${codeName(outcome.error.code)}: ${outcome.error.message}`;
        // Missing inputs and timeouts are deterministic: report them instead of retrying.
        const retry = outcome.error.code === Code.UNAVAILABLE || outcome.error.code === Code.INTERNAL || outcome.error.code === Code.UNKNOWN;
        if (retry) requeueOrFail(e, attempt.outcome);
        else if (runningCopies(e).length === 0) {
          complete(e, { cachedResult: false, status: { code: outcome.error.code, message: outcome.error.message, missing: outcome.error.missing } });
        }
        dispatch();
        return;
      }
      try {
        const accepted = await deps.acceptResult(e, outcome.result, nodeId);
        attempt.outcome = `exit ${accepted.exitCode}`;
        recordDuration(e, attempt.endedAt - attempt.startedAt);
        if ((e.stage as Stage) !== 'completed') complete(e, { result: accepted, cachedResult: false, status: { code: Code.OK, message: '' } });
      } catch (err) {
        const error = err instanceof OrionError ? err : new OrionError(Code.INTERNAL, String(err));
        attempt.outcome = `result rejected: ${error.message}`;
        if (error.code === Code.DATA_LOSS) deps.registry.quarantine(nodeId, error.message);
        requeueOrFail(e, attempt.outcome);
      }
      dispatch();
    },
    queueLength: () => queue.length,
    runningCount: () => assignments.size,
    dispatch,
    cancel(name, reason) {
      const e = executions.get(name);
      if (!e || e.stage === 'completed') return;
      deps.log.info({ execution: name, reason }, 'cancelling action');
      complete(e, { cachedResult: false, status: { code: Code.CANCELLED, message: `cancelled: ${reason}` } });
      dispatch();
    },
    checkStragglers() {
      const now = deps.clock.now();
      const seen = new Set<Execution>();
      for (const { execution: e } of assignments.values()) {
        if (seen.has(e) || e.stage !== 'executing') continue;
        seen.add(e);
        const copies = runningCopies(e);
        if (copies.length !== 1) continue;
        const expected = durations.get(e.request.action.commandDigest.hash);
        if (expected === undefined) continue;
        const attempt = e.attempts.find((x) => x.assignmentId === copies[0]!.id)!;
        const elapsed = now - attempt.startedAt;
        if (elapsed < stragglerMinMs || elapsed < stragglerFactor * expected) continue;
        if (queue.some((q) => q.notBefore === undefined || q.notBefore <= now)) return; // queued work comes first
        const node = pickNode(e, new Set());
        if (!node) return;
        deps.log.info({ execution: e.name, elapsedMs: elapsed, expectedMs: Math.round(expected), nodeId: node.nodeId }, 'straggler: starting a speculative copy');
        assign(e, node);
      }
    },
    expectedDuration: (commandHash) => durations.get(commandHash),
  };
}
