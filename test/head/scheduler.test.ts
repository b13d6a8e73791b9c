import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { digestOf } from '../../cas/digest.js';
import type { ActionResult } from '../../cas/types.js';
import { createNodeRegistry } from '../../head/node-registry.js';
import { createScheduler, type AttemptOutcome, type Execution, type ExecutionRequest, type NodeCommand } from '../../head/scheduler.js';

const TIMEOUT = 1_000;

type Accept = (e: Execution, r: ActionResult, nodeId: string) => Promise<ActionResult>;

function request(n: number, instanceName = ''): ExecutionRequest {
  const inputRootDigest = digestOf(Buffer.from('root'));
  return {
    instanceName,
    actionDigest: digestOf(Buffer.from(`action ${n}`)),
    action: { commandDigest: digestOf(Buffer.from(`command ${n}`)), inputRootDigest, doNotCache: false },
    command: { arguments: ['cc', '-c', `f${n}.c`], environmentVariables: [], outputPaths: [`f${n}.o`], outputFiles: [], outputDirectories: [], workingDirectory: '' },
  };
}

const resultFrom = (nodeId: string, exitCode = 0): ActionResult => ({
  outputFiles: [],
  outputSymlinks: [],
  outputDirectories: [],
  exitCode,
  executionMetadata: { worker: nodeId },
});
const ok = (nodeId: string, exitCode = 0): AttemptOutcome => ({ ok: true, result: resultFrom(nodeId, exitCode) });
const failed = (code: Code, message: string): AttemptOutcome => ({ ok: false, error: new OrionError(code, message) });

function setup(opts: { maxAttempts?: number } = {}) {
  const clock = createManualClock(50_000);
  const registry = createNodeRegistry({ clock, heartbeatTimeoutMs: TIMEOUT });
  const sent: { nodeId: string; cmd: NodeCommand }[] = [];
  const accepted: { execution: string; nodeId: string }[] = [];
  /** Per-call behaviour of acceptResult; the default accepts the result as it is. */
  const acceptQueue: Accept[] = [];
  const scheduler = createScheduler({
    registry,
    clock,
    log: silentLogger(),
    maxAttempts: opts.maxAttempts,
    send: (nodeId, cmd) => {
      sent.push({ nodeId, cmd });
      return true;
    },
    acceptResult: async (e, r, nodeId) => {
      accepted.push({ execution: e.name, nodeId });
      const fn = acceptQueue.shift();
      return fn ? fn(e, r, nodeId) : r;
    },
  });
  const sessions = new Map<string, string>();
  const join = (nodeId: string, slots = 1) => {
    const rec = registry.register({ nodeId, address: '', slots, metadata: {} });
    sessions.set(nodeId, rec.sessionId);
    registry.attach(nodeId, rec.sessionId);
  };
  const assigns = (nodeId?: string) =>
    sent.filter((s) => s.cmd.type === 'assign' && (nodeId === undefined || s.nodeId === nodeId)).map((s) => ({ nodeId: s.nodeId, ...(s.cmd as Extract<NodeCommand, { type: 'assign' }>) }));
  const lastAssign = () => assigns().at(-1)!;
  /** Records every stage an execution goes through. */
  const track = (e: Execution) => {
    const stages: string[] = [];
    scheduler.watch(e.name, (x) => stages.push(x.stage));
    return stages;
  };
  return { clock, registry, scheduler, sent, accepted, acceptQueue, join, sessions, assigns, lastAssign, track };
}

describe('scheduler', () => {
  it('dispatches a queued execution to an active node with a free slot, and completes it with the node result', async () => {
    const { scheduler, join, assigns, track } = setup();
    const e = scheduler.enqueue(request(1));
    const stages = track(e);
    expect(e.stage).toBe('queued');
    expect(assigns()).toEqual([]);
    join('n1');
    expect(assigns().map((a) => [a.nodeId, a.assignmentId])).toEqual([['n1', `${e.name}/1`]]);
    expect(e.stage).toBe('executing');
    await scheduler.finished('n1', `${e.name}/1`, ok('n1'));
    expect(e.stage).toBe('completed');
    expect(e.response).toEqual({ result: resultFrom('n1'), cachedResult: false, status: { code: Code.OK, message: '' } });
    expect(e.attempts.map((a) => [a.nodeId, a.outcome])).toEqual([['n1', 'exit 0']]);
    expect(stages).toEqual(['queued', 'executing', 'completed']);
    expect(scheduler.runningCount()).toBe(0);
  });

  it('never assigns a node more executions than it has slots', async () => {
    const { scheduler, join, registry, assigns } = setup();
    join('n1', 2);
    const es = [1, 2, 3, 4, 5].map((n) => scheduler.enqueue(request(n)));
    expect(assigns('n1')).toHaveLength(2);
    expect(registry.get('n1')!.running.size).toBe(2);
    expect(scheduler.queueLength()).toBe(3);
    // Each finished action frees exactly one slot.
    await scheduler.finished('n1', assigns()[0]!.assignmentId, ok('n1'));
    expect(assigns('n1')).toHaveLength(3);
    expect(registry.get('n1')!.running.size).toBe(2);
    join('n2', 1);
    expect(assigns('n2')).toHaveLength(1);
    expect(registry.get('n2')!.running.size).toBe(1);
    expect(scheduler.queueLength()).toBe(1);
    expect(es.filter((e) => e.stage === 'executing')).toHaveLength(3);
  });

  it('spreads work over nodes by load', () => {
    const { scheduler, join, assigns } = setup();
    join('big', 4);
    join('small', 2);
    for (let n = 0; n < 6; n++) scheduler.enqueue(request(n));
    expect(assigns('big')).toHaveLength(4);
    expect(assigns('small')).toHaveLength(2);
  });

  it('requeues the running assignment of a node that misses heartbeats and dispatches it to another node with a free slot', async () => {
    const { clock, registry, scheduler, join, assigns, sessions } = setup();
    join('n1');
    const e = scheduler.enqueue(request(1));
    expect(assigns().map((a) => a.nodeId)).toEqual(['n1']);
    join('n2');
    clock.advance(TIMEOUT / 2);
    registry.heartbeat('n2', sessions.get('n2')!, { load: 0 });
    clock.advance(TIMEOUT / 2 + 1);
    registry.sweep();
    expect(registry.get('n1')!.status).toBe('inactive');
    expect(registry.get('n1')!.running.size).toBe(0);
    expect(assigns().map((a) => [a.nodeId, a.assignmentId])).toEqual([
      ['n1', `${e.name}/1`],
      ['n2', `${e.name}/2`],
    ]);
    expect(e.attempts[0]!.outcome).toBe(`node lost (no heartbeat for ${TIMEOUT + 1} ms (timeout ${TIMEOUT} ms))`);
    expect(e.attempts[0]!.endedAt).toBe(clock.now());
    await scheduler.finished('n2', `${e.name}/2`, ok('n2'));
    expect(e.response!.result!.executionMetadata!.worker).toBe('n2');
  });

  it('tells a node that missed heartbeats, but still has its stream open, to cancel the work that was requeued', () => {
    const { clock, registry, scheduler, join, sent } = setup();
    join('n1');
    const e = scheduler.enqueue(request(1));
    clock.advance(TIMEOUT + 1);
    registry.sweep();
    expect(sent.filter((s) => s.cmd.type === 'cancel')).toEqual([{ nodeId: 'n1', cmd: { type: 'cancel', assignmentId: `${e.name}/1` } }]);
  });

  it('keeps a requeued execution queued until some node has a free slot', () => {
    const { clock, registry, scheduler, join, assigns, track } = setup();
    join('n1');
    const e = scheduler.enqueue(request(1));
    const stages = track(e);
    clock.advance(TIMEOUT + 1);
    registry.sweep();
    expect(e.stage).toBe('queued');
    expect(scheduler.queueLength()).toBe(1);
    join('n2');
    expect(assigns().map((a) => a.nodeId)).toEqual(['n1', 'n2']);
    expect(stages).toEqual(['executing', 'queued', 'executing']);
  });

  it('requeues the work of a node whose stream drops at once, without waiting for the heartbeat timeout', () => {
    const { registry, scheduler, join, assigns, sessions } = setup();
    join('n1');
    join('n2');
    const e1 = scheduler.enqueue(request(1));
    const victim = assigns()[0]!.nodeId;
    const other = victim === 'n1' ? 'n2' : 'n1';
    // The other node is busy when the victim drops: the action waits for a slot.
    const e2 = scheduler.enqueue(request(2));
    expect(assigns().map((a) => a.nodeId)).toEqual([victim, other]);
    registry.detach(victim, sessions.get(victim)!, 'connection reset');
    expect(e1.stage).toBe('queued');
    expect(e1.attempts[0]!.outcome).toBe('node lost (stream closed: connection reset)');
    return scheduler.finished(other, `${e2.name}/1`, ok(other)).then(() => {
      expect(assigns().map((a) => [a.nodeId, a.assignmentId])).toEqual([
        [victim, `${e1.name}/1`],
        [other, `${e2.name}/1`],
        [other, `${e1.name}/2`],
      ]);
    });
  });

  it('requeues the work of a node that registers again with the same id (it restarted)', () => {
    const { registry, scheduler, join, assigns } = setup();
    join('n1');
    const e = scheduler.enqueue(request(1));
    join('n1');
    expect(assigns().map((a) => [a.nodeId, a.assignmentId])).toEqual([
      ['n1', `${e.name}/1`],
      ['n1', `${e.name}/2`],
    ]);
    expect(e.attempts[0]!.outcome).toBe('node lost (node registered again)');
    expect(registry.get('n1')!.running).toEqual(new Set([`${e.name}/2`]));
  });

  it('discards a late result from a node whose assignment was requeued, completing the execution only once', async () => {
    const { clock, registry, scheduler, join, accepted, track } = setup();
    join('n1');
    const e = scheduler.enqueue(request(1));
    const stages = track(e);
    join('n2');
    clock.advance(TIMEOUT + 1);
    registry.heartbeat('n2', registry.get('n2')!.sessionId, { load: 0 });
    registry.sweep();
    expect(e.attempts.map((a) => a.nodeId)).toEqual(['n1', 'n2']);
    // n1 was only slow: its result for the old assignment arrives now.
    await scheduler.finished('n1', `${e.name}/1`, ok('n1', 7));
    expect(e.stage).toBe('executing');
    expect(accepted).toEqual([]);
    await scheduler.finished('n2', `${e.name}/2`, ok('n2'));
    // And a duplicate of n2's report, or n1's result once more, changes nothing.
    await scheduler.finished('n2', `${e.name}/2`, ok('n2', 3));
    await scheduler.finished('n1', `${e.name}/1`, ok('n1', 7));
    expect(accepted).toEqual([{ execution: e.name, nodeId: 'n2' }]);
    expect(e.response!.result!.exitCode).toBe(0);
    expect(e.response!.result!.executionMetadata!.worker).toBe('n2');
    expect(stages.filter((s) => s === 'completed')).toHaveLength(1);
    expect(scheduler.runningCount()).toBe(0);
  });

  it('ignores a result for an assignment reported by a node it was not given to', async () => {
    const { scheduler, join, accepted } = setup();
    join('n1');
    join('n2');
    const e = scheduler.enqueue(request(1));
    const other = e.attempts[0]!.nodeId === 'n1' ? 'n2' : 'n1';
    await scheduler.finished(other, `${e.name}/1`, ok(other));
    expect(e.stage).toBe('executing');
    expect(accepted).toEqual([]);
  });

  it('gives up with UNAVAILABLE naming every attempt when the node running the action dies three times', () => {
    const { registry, scheduler, join, sessions } = setup();
    const e = scheduler.enqueue(request(1));
    for (const id of ['n1', 'n2', 'n3']) {
      join(id);
      expect(e.attempts.at(-1)!.nodeId).toBe(id);
      registry.detach(id, sessions.get(id)!, `${id} crashed`);
    }
    expect(e.stage).toBe('completed');
    expect(e.response!.result).toBeUndefined();
    expect(e.response!.status.code).toBe(Code.UNAVAILABLE);
    expect(e.response!.status.message).toBe(
      `action ${e.request.actionDigest.hash}/${e.request.actionDigest.sizeBytes} (cc -c f1.c ...) failed 3 times, giving up: ` +
        'attempt 1 on n1: node lost (stream closed: n1 crashed); attempt 2 on n2: node lost (stream closed: n2 crashed); attempt 3 on n3: node lost (stream closed: n3 crashed)',
    );
    // A fourth node does not pick it up again.
    join('n4');
    expect(e.attempts).toHaveLength(3);
    expect(scheduler.queueLength()).toBe(0);
  });

  it('honours a configured attempt cap', () => {
    const { registry, scheduler, join, sessions } = setup({ maxAttempts: 1 });
    join('n1');
    const e = scheduler.enqueue(request(1));
    registry.detach('n1', sessions.get('n1')!, 'gone');
    expect(e.response!.status.code).toBe(Code.UNAVAILABLE);
    expect(e.response!.status.message).toContain('failed 1 times, giving up: attempt 1 on n1: node lost (stream closed: gone)');
  });

  it('deduplicates identical in-flight executions, and runs the action again once the first completed', async () => {
    const { scheduler, join, assigns } = setup();
    join('n1', 4);
    const a = scheduler.enqueue(request(1));
    const b = scheduler.enqueue(request(1));
    expect(b).toBe(a);
    expect(assigns()).toHaveLength(1);
    // Another instance name or another action is a different execution.
    expect(scheduler.enqueue(request(1, 'other'))).not.toBe(a);
    expect(scheduler.enqueue(request(2))).not.toBe(a);
    expect(assigns()).toHaveLength(3);
    await scheduler.finished('n1', `${a.name}/1`, ok('n1'));
    const c = scheduler.enqueue(request(1));
    expect(c).not.toBe(a);
    expect(assigns()).toHaveLength(4);
  });

  it('re-runs the action on another node when the head rejects a node result (DATA_LOSS)', async () => {
    const { scheduler, join, assigns, acceptQueue, track } = setup();
    join('n1');
    join('n2');
    const e = scheduler.enqueue(request(1));
    const stages = track(e);
    const first = e.attempts[0]!.nodeId;
    const second = first === 'n1' ? 'n2' : 'n1';
    acceptQueue.push(async () => {
      throw new OrionError(Code.DATA_LOSS, `node ${first} reported 1 output blob(s) it never uploaded`);
    });
    await scheduler.finished(first, `${e.name}/1`, ok(first));
    expect(e.attempts[0]!.outcome).toBe(`result rejected: node ${first} reported 1 output blob(s) it never uploaded`);
    expect(assigns().map((a) => [a.nodeId, a.assignmentId])).toEqual([
      [first, `${e.name}/1`],
      [second, `${e.name}/2`],
    ]);
    await scheduler.finished(second, `${e.name}/2`, ok(second));
    expect(e.response!.status.code).toBe(Code.OK);
    expect(e.response!.result!.executionMetadata!.worker).toBe(second);
    expect(stages).toEqual(['executing', 'queued', 'executing', 'completed']);
  });

  it('retries an action whose node reports UNAVAILABLE, on another node', async () => {
    const { scheduler, join, assigns } = setup();
    join('n1');
    join('n2');
    const e = scheduler.enqueue(request(1));
    const first = e.attempts[0]!.nodeId;
    await scheduler.finished(first, `${e.name}/1`, failed(Code.UNAVAILABLE, 'head CAS unreachable'));
    expect(assigns().map((a) => a.nodeId)).toEqual([first, first === 'n1' ? 'n2' : 'n1']);
    expect(e.attempts[0]!.outcome).toBe('UNAVAILABLE: head CAS unreachable');
  });

  it.each([
    [Code.FAILED_PRECONDITION, 'missing blob'],
    [Code.DEADLINE_EXCEEDED, 'action timed out after 100 ms and was killed: cc'],
    [Code.INVALID_ARGUMENT, 'bad output path'],
  ])('reports a deterministic failure (code %i) to the client without retrying', async (code, message) => {
    const { scheduler, join, assigns } = setup();
    join('n1');
    join('n2');
    const e = scheduler.enqueue(request(1));
    const missing = [digestOf(Buffer.from('gone'))];
    await scheduler.finished(e.attempts[0]!.nodeId, `${e.name}/1`, { ok: false, error: new OrionError(code, message, { missing }) });
    expect(e.stage).toBe('completed');
    expect(e.response).toEqual({ cachedResult: false, status: { code, message, missing } });
    expect(assigns()).toHaveLength(1);
  });

  it('completes a non-zero exit as a normal result (the build failed, the execution did not)', async () => {
    const { scheduler, join } = setup();
    join('n1');
    const e = scheduler.enqueue(request(1));
    await scheduler.finished('n1', `${e.name}/1`, ok('n1', 1));
    expect(e.response!.status.code).toBe(Code.OK);
    expect(e.response!.result!.exitCode).toBe(1);
    expect(e.attempts[0]!.outcome).toBe('exit 1');
  });

  it('puts queued work back when a node cannot take an assignment, and keeps it for the next node', () => {
    const clock = createManualClock(0);
    const registry = createNodeRegistry({ clock, heartbeatTimeoutMs: TIMEOUT });
    const reachable = new Set<string>();
    const sent: string[] = [];
    const scheduler = createScheduler({
      registry,
      clock,
      log: silentLogger(),
      send: (nodeId) => {
        if (!reachable.has(nodeId)) return false;
        sent.push(nodeId);
        return true;
      },
      acceptResult: async (_e, r) => r,
    });
    const e = scheduler.enqueue(request(1));
    const n1 = registry.register({ nodeId: 'n1', address: '', slots: 1, metadata: {} });
    registry.attach('n1', n1.sessionId);
    expect(e.stage).toBe('queued');
    expect(e.attempts).toEqual([]);
    expect(registry.get('n1')!.running.size).toBe(0);
    reachable.add('n2');
    const n2 = registry.register({ nodeId: 'n2', address: '', slots: 1, metadata: {} });
    registry.attach('n2', n2.sessionId);
    expect(sent).toEqual(['n2']);
    expect(e.attempts.map((a) => [a.nodeId, a.assignmentId])).toEqual([['n2', `${e.name}/1`]]);
  });

  it('answers watch on an unknown operation with NOT_FOUND', () => {
    const { scheduler } = setup();
    let err: unknown;
    try {
      scheduler.watch('nope', () => {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.NOT_FOUND);
    expect((err as OrionError).message).toBe('unknown operation "nope"');
  });
});
