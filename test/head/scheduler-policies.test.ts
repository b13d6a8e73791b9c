import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { digestOf } from '../../cas/digest.js';
import type { ActionResult } from '../../cas/types.js';
import { createNodeRegistry } from '../../head/node-registry.js';
import { createScheduler, type ExecutionRequest, type NodeCommand } from '../../head/scheduler.js';

function request(n: number, opts: { priority?: number; command?: string; root?: string } = {}): ExecutionRequest {
  return {
    instanceName: '',
    actionDigest: digestOf(Buffer.from(`action ${n}`)),
    action: { commandDigest: digestOf(Buffer.from(opts.command ?? `command ${n}`)), inputRootDigest: digestOf(Buffer.from(opts.root ?? 'root')), doNotCache: false },
    command: { arguments: ['cc', '-c', `f${n}.c`], environmentVariables: [], outputPaths: [], outputFiles: [], outputDirectories: [], workingDirectory: '' },
    priority: opts.priority,
  };
}

const result = (worker: string): ActionResult => ({ outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 0, executionMetadata: { worker } });

function setup(opts: { retryBackoffMs?: number; accept?: (nodeId: string) => void } = {}) {
  const clock = createManualClock(10_000);
  const registry = createNodeRegistry({ clock, heartbeatTimeoutMs: 60_000 });
  const sent: { nodeId: string; cmd: NodeCommand }[] = [];
  const scheduler = createScheduler({
    registry,
    clock,
    log: silentLogger(),
    retryBackoffMs: opts.retryBackoffMs,
    random: () => 1,
    stragglerFactor: 3,
    stragglerMinMs: 1000,
    send: (nodeId, cmd) => {
      sent.push({ nodeId, cmd });
      return true;
    },
    acceptResult: async (_e, r, nodeId) => {
      opts.accept?.(nodeId);
      return r;
    },
  });
  const join = (nodeId: string, slots = 1) => {
    const rec = registry.register({ nodeId, address: '', slots, metadata: {} });
    registry.attach(nodeId, rec.sessionId);
  };
  const assigns = () => sent.filter((s) => s.cmd.type === 'assign').map((s) => ({ nodeId: s.nodeId, ...(s.cmd as Extract<NodeCommand, { type: 'assign' }>) }));
  const cancels = () => sent.filter((s) => s.cmd.type === 'cancel').map((s) => ({ nodeId: s.nodeId, id: s.cmd.assignmentId }));
  return { clock, registry, scheduler, join, assigns, cancels };
}

describe('scheduler policies', () => {
  it('runs queued actions in priority order (lower first: the longest remaining chain), arrival order among equals', async () => {
    const { scheduler, join, assigns } = setup();
    const low = scheduler.enqueue(request(1, { priority: 0 }));
    const critical = scheduler.enqueue(request(2, { priority: -50 }));
    const mid = scheduler.enqueue(request(3, { priority: -10 }));
    const mid2 = scheduler.enqueue(request(4, { priority: -10 }));
    join('n1');
    for (let i = 0; i < 4; i++) {
      const a = assigns().at(-1)!;
      await scheduler.finished('n1', a.assignmentId, { ok: true, result: result('n1') });
    }
    expect(assigns().map((a) => a.execution.name)).toEqual([critical.name, mid.name, mid2.name, low.name]);
  });

  it('keeps priority and arrival order over thousands of queued actions, with cancellations and late arrivals mixed in', async () => {
    const { scheduler, join, assigns } = setup();
    // Enough work that the queue's taken front is compacted several times while it drains.
    // `from`: how many assignments had gone out when the action was queued.
    const all: { name: string; priority: number; seq: number; from: number }[] = [];
    for (let i = 0; i < 5000; i++) {
      const priority = -(i % 7);
      all.push({ name: scheduler.enqueue(request(i, { priority })).name, priority, seq: i, from: 0 });
    }
    const cancelled = new Set<string>();
    for (let i = 3; i < 5000; i += 97) {
      scheduler.cancel(all[i]!.name, 'test');
      cancelled.add(all[i]!.name);
    }
    join('n1', 4);
    let next = 5000;
    let out = assigns();
    for (let done = 0; done < (out = out.length > done ? out : assigns()).length; done++) {
      const a = out[done]!;
      await scheduler.finished(a.nodeId, a.assignmentId, { ok: true, result: result(a.nodeId) });
      // Late arrivals while the queue drains: more urgent than everything queued.
      if (done % 500 === 0 && next < 5010) {
        const from = (out = assigns()).length;
        all.push({ name: scheduler.enqueue(request(next, { priority: -100 })).name, priority: -100, seq: next++, from });
      }
    }
    const ran = assigns().map((a) => a.execution.name);
    expect(ran.length).toBe(all.length - cancelled.size);
    // Each assignment is the most urgent action queued at that moment, (priority, arrival) first.
    const pending = all.filter((x) => !cancelled.has(x.name)).sort((x, y) => x.priority - y.priority || x.seq - y.seq);
    for (let i = 0; i < ran.length; i++) {
      const at = pending.findIndex((x) => x.from <= i);
      expect(ran[i], `assignment ${i}`).toBe(pending[at]!.name);
      pending.splice(at, 1);
    }
    expect(scheduler.queueLength()).toBe(0);
  });

  it('retries a failing action at once the first time, then backs off exponentially before each further retry', async () => {
    const { clock, scheduler, join, assigns } = setup({ retryBackoffMs: 100 });
    join('n1');
    join('n2');
    join('n3');
    const e = scheduler.enqueue(request(1));
    const crash = new OrionError(Code.UNAVAILABLE, 'node crashed running it');
    await scheduler.finished(assigns()[0]!.nodeId, `${e.name}/1`, { ok: false, error: crash });
    expect(assigns()).toHaveLength(2); // first retry: immediately
    await scheduler.finished(assigns()[1]!.nodeId, `${e.name}/2`, { ok: false, error: crash });
    expect(assigns()).toHaveLength(2); // second retry waits 100 ms (random() = 1: full delay)
    clock.advance(99);
    expect(assigns()).toHaveLength(2);
    clock.advance(1);
    expect(assigns()).toHaveLength(3);
    expect(e.stage).toBe('executing');
  });

  it('starts a speculative copy of a straggler on another node when slots are free; the first result wins and the other copy is cancelled', async () => {
    const { clock, scheduler, join, assigns, cancels } = setup();
    join('n1');
    join('n2');
    // Teach the head how long this command takes: 200 ms.
    const warm = scheduler.enqueue(request(1, { command: 'same' }));
    clock.advance(200);
    await scheduler.finished(assigns()[0]!.nodeId, `${warm.name}/1`, { ok: true, result: result('x') });
    expect(scheduler.expectedDuration(digestOf(Buffer.from('same')).hash)).toBe(200);

    const slow = scheduler.enqueue(request(2, { command: 'same' }));
    const first = assigns().at(-1)!;
    clock.advance(500);
    scheduler.checkStragglers();
    expect(assigns()).toHaveLength(2); // under max(3 x 200 ms, 1 s): not yet a straggler
    clock.advance(600);
    scheduler.checkStragglers();
    const copy = assigns().at(-1)!;
    expect(assigns()).toHaveLength(3);
    expect(copy.execution.name).toBe(slow.name);
    expect(copy.nodeId).not.toBe(first.nodeId);
    await scheduler.finished(copy.nodeId, copy.assignmentId, { ok: true, result: result(copy.nodeId) });
    expect(slow.stage).toBe('completed');
    expect(slow.response!.result!.executionMetadata!.worker).toBe(copy.nodeId);
    expect(cancels()).toEqual([{ nodeId: first.nodeId, id: first.assignmentId }]);
    // The loser's late result changes nothing.
    await scheduler.finished(first.nodeId, first.assignmentId, { ok: true, result: result(first.nodeId) });
    expect(slow.response!.result!.executionMetadata!.worker).toBe(copy.nodeId);
    expect(scheduler.runningCount()).toBe(0);
  });

  it('quarantines a node whose result fails verification and re-runs the action elsewhere; the node gets no more work', async () => {
    let lie = true;
    const { scheduler, registry, join, assigns } = setup({
      accept: (nodeId) => {
        if (nodeId === 'liar' && lie) throw new OrionError(Code.DATA_LOSS, 'output digest mismatch');
      },
    });
    join('liar');
    const e = scheduler.enqueue(request(1));
    expect(assigns()[0]!.nodeId).toBe('liar');
    join('honest');
    await scheduler.finished('liar', `${e.name}/1`, { ok: true, result: result('liar') });
    expect(registry.get('liar')!.quarantined).toBe('output digest mismatch');
    expect(assigns()[1]!.nodeId).toBe('honest');
    await scheduler.finished('honest', `${e.name}/2`, { ok: true, result: result('honest') });
    expect(e.response!.status.code).toBe(Code.OK);
    lie = false;
    // A new action never goes to the quarantined node, even after it registers again.
    join('liar');
    const next = scheduler.enqueue(request(2));
    expect(assigns().at(-1)!.nodeId).toBe('honest');
    expect(next.stage).toBe('executing');
  });

  it('prefers the node that ran the same input root recently (it already holds the blobs)', async () => {
    const { scheduler, join, assigns } = setup();
    join('a', 2);
    join('b', 2);
    const first = scheduler.enqueue(request(1, { root: 'tree-1' }));
    const firstNode = assigns()[0]!.nodeId;
    await scheduler.finished(firstNode, `${first.name}/1`, { ok: true, result: result(firstNode) });
    const other = scheduler.enqueue(request(2, { root: 'tree-2' }));
    const otherNode = assigns()[1]!.nodeId;
    expect(otherNode).not.toBe(undefined);
    await scheduler.finished(otherNode, `${other.name}/1`, { ok: true, result: result(otherNode) });
    scheduler.enqueue(request(3, { root: 'tree-1' }));
    expect(assigns()[2]!.nodeId).toBe(firstNode);
  });

  it('cancels a queued execution (it never runs) and a running one (its node is told to stop), completing both with CANCELLED', async () => {
    const { scheduler, join, assigns, cancels } = setup();
    join('n1');
    const running = scheduler.enqueue(request(1));
    const queued = scheduler.enqueue(request(2));
    expect(assigns().map((a) => a.execution.name)).toEqual([running.name]);
    scheduler.cancel(queued.name, 'the client cancelled the build');
    expect(queued.response!.status.code).toBe(Code.CANCELLED);
    scheduler.cancel(running.name, 'the client cancelled the build');
    expect(running.response!.status).toEqual({ code: Code.CANCELLED, message: 'cancelled: the client cancelled the build' });
    expect(cancels()).toEqual([{ nodeId: 'n1', id: `${running.name}/1` }]);
    expect(scheduler.runningCount()).toBe(0);
    // The freed slot takes new work, and the cancelled one was never dispatched.
    const next = scheduler.enqueue(request(3));
    expect(assigns().map((a) => a.execution.name)).toEqual([running.name, next.name]);
  });
});
