import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { createNodeRegistry, type NodeRegistration } from '../../head/node-registry.js';

const TIMEOUT = 1_000;

function thrown(fn: () => unknown): OrionError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(OrionError);
    return err as OrionError;
  }
  throw new Error('expected an OrionError, nothing was thrown');
}

function setup() {
  const clock = createManualClock(10_000);
  const registry = createNodeRegistry({ clock, heartbeatTimeoutMs: TIMEOUT });
  const lost: [string, string][] = [];
  const available: string[] = [];
  registry.on('lost', (id, reason) => lost.push([id, reason]));
  registry.on('available', (id) => available.push(id));
  const reg = (nodeId: string, slots = 2): NodeRegistration => ({ nodeId, address: '', slots, metadata: {} });
  /** Registers and attaches a node; returns its session id. */
  const join = (nodeId: string, slots = 2) => {
    const rec = registry.register(reg(nodeId, slots));
    registry.attach(nodeId, rec.sessionId);
    return rec.sessionId;
  };
  const statusOf = (id: string) => registry.get(id)?.status;
  return { clock, registry, lost, available, reg, join, statusOf };
}

describe('node registry', () => {
  it('gives a draining node no work until a heartbeat says it is done, then makes it available again', () => {
    const { registry, join, available } = setup();
    const s1 = join('n1');
    join('n2');
    available.length = 0;
    registry.heartbeat('n1', s1, { load: 0, draining: true });
    expect(registry.withFreeSlots().map((n) => n.nodeId)).toEqual(['n2']);
    expect(registry.get('n1')?.status).toBe('active');
    registry.heartbeat('n1', s1, { load: 0, draining: true });
    expect(available).toEqual([]);
    registry.heartbeat('n1', s1, { load: 0 });
    expect(available).toEqual(['n1']);
    expect(registry.withFreeSlots().map((n) => n.nodeId).sort()).toEqual(['n1', 'n2']);
  });

  it('keeps a registered node inactive until its stream attaches, then makes it active and available', () => {
    const { registry, reg, available, statusOf } = setup();
    const rec = registry.register(reg('n1'));
    expect(statusOf('n1')).toBe('inactive');
    expect(registry.withFreeSlots()).toEqual([]);
    registry.attach('n1', rec.sessionId);
    expect(statusOf('n1')).toBe('active');
    expect(available).toEqual(['n1']);
    expect(registry.withFreeSlots().map((n) => n.nodeId)).toEqual(['n1']);
  });

  it('marks a node that misses heartbeats inactive after the timeout and disconnected after a further timeout', () => {
    const { clock, registry, join, lost, statusOf } = setup();
    join('n1');
    clock.advance(TIMEOUT);
    registry.sweep();
    expect(statusOf('n1')).toBe('active');
    clock.advance(1);
    registry.sweep();
    expect(statusOf('n1')).toBe('inactive');
    expect(lost).toEqual([['n1', `no heartbeat for ${TIMEOUT + 1} ms (timeout ${TIMEOUT} ms)`]]);
    expect(registry.withFreeSlots()).toEqual([]);
    clock.advance(TIMEOUT - 1);
    registry.sweep();
    expect(statusOf('n1')).toBe('inactive');
    clock.advance(1);
    registry.sweep();
    expect(statusOf('n1')).toBe('disconnected');
    expect(registry.list('disconnected').map((n) => n.nodeId)).toEqual(['n1']);
    // Lost is reported once, not again on disconnection.
    expect(lost).toHaveLength(1);
  });

  it('keeps a node that heartbeats in time active', () => {
    const { clock, registry, join, lost, statusOf } = setup();
    const s = join('n1');
    for (let i = 0; i < 10; i++) {
      clock.advance(TIMEOUT / 2);
      registry.heartbeat('n1', s, { load: i });
      registry.sweep();
    }
    expect(statusOf('n1')).toBe('active');
    expect(registry.get('n1')!.load).toBe(9);
    expect(lost).toEqual([]);
  });

  it('makes a timed-out node whose stream is still open active again when its heartbeats resume', () => {
    const { clock, registry, join, available, statusOf } = setup();
    const s = join('n1');
    clock.advance(TIMEOUT + 1);
    registry.sweep();
    expect(statusOf('n1')).toBe('inactive');
    registry.heartbeat('n1', s, { load: 0 });
    expect(statusOf('n1')).toBe('active');
    expect(available).toEqual(['n1', 'n1']);
  });

  it('marks a node inactive as soon as its stream drops, without waiting for the heartbeat timeout', () => {
    const { registry, join, lost, statusOf } = setup();
    const s = join('n1');
    registry.detach('n1', s, 'connection reset');
    expect(statusOf('n1')).toBe('inactive');
    expect(registry.get('n1')!.connected).toBe(false);
    expect(lost).toEqual([['n1', 'stream closed: connection reset']]);
  });

  it('does not revive a node whose stream dropped when a late heartbeat arrives', () => {
    const { registry, join, statusOf } = setup();
    const s = join('n1');
    registry.detach('n1', s, 'gone');
    registry.heartbeat('n1', s, { load: 0 });
    expect(statusOf('n1')).toBe('inactive');
    expect(registry.withFreeSlots()).toEqual([]);
  });

  it('invalidates the old session when a node registers again with the same id', () => {
    const { registry, join, reg, lost } = setup();
    const old = join('n1');
    const fresh = registry.register(reg('n1', 4));
    expect(fresh.sessionId).not.toBe(old);
    expect(lost).toEqual([['n1', 'node registered again']]);

    const hb = thrown(() => registry.heartbeat('n1', old, { load: 0 }));
    expect(hb.code).toBe(Code.FAILED_PRECONDITION);
    expect(hb.message).toBe('stale session for node "n1": it registered again');
    const at = thrown(() => registry.attach('n1', old));
    expect(at.code).toBe(Code.FAILED_PRECONDITION);

    // The old stream closing later must not take the new session down.
    registry.attach('n1', fresh.sessionId);
    registry.detach('n1', old, 'old stream closed');
    expect(registry.get('n1')!.status).toBe('active');
    expect(registry.get('n1')!.slots).toBe(4);
    registry.heartbeat('n1', fresh.sessionId, { load: 1 });
  });

  it('rejects heartbeats from a node that never registered with NOT_FOUND', () => {
    const { registry } = setup();
    const err = thrown(() => registry.heartbeat('ghost', 'x', { load: 0 }));
    expect(err.code).toBe(Code.NOT_FOUND);
    expect(err.message).toBe('node "ghost" is not registered');
    expect(err.hint).toBe('call Register first');
  });

  it.each([
    ['', 'invalid node id "": use 1-128 characters of [A-Za-z0-9._:@-]'],
    ['has space', 'invalid node id "has space": use 1-128 characters of [A-Za-z0-9._:@-]'],
    ['a/b', 'invalid node id "a/b": use 1-128 characters of [A-Za-z0-9._:@-]'],
    ['x'.repeat(129), `invalid node id "${'x'.repeat(129)}": use 1-128 characters of [A-Za-z0-9._:@-]`],
  ])('rejects node id %j with INVALID_ARGUMENT', (nodeId, message) => {
    const { registry, reg } = setup();
    const err = thrown(() => registry.register(reg(nodeId)));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toBe(message);
    expect(registry.list()).toEqual([]);
  });

  it.each([0, -1, 1.5, 4097, Number.NaN])('rejects a slot count of %d with INVALID_ARGUMENT', (slots) => {
    const { registry, reg } = setup();
    const err = thrown(() => registry.register(reg('n1', slots)));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toBe(`invalid slot count ${slots} for node n1: must be 1..4096`);
  });

  it('offers only active, connected nodes with a free slot', () => {
    const { registry, join } = setup();
    join('a', 1);
    join('b', 2);
    registry.get('a')!.running.add('x');
    registry.get('b')!.running.add('y');
    expect(registry.withFreeSlots().map((n) => n.nodeId)).toEqual(['b']);
    registry.get('b')!.running.add('z');
    expect(registry.withFreeSlots()).toEqual([]);
  });

  it('lists nodes sorted by id and filtered by status', () => {
    const { registry, join, reg } = setup();
    join('zeta');
    join('alpha');
    registry.register(reg('mid'));
    expect(registry.list().map((n) => n.nodeId)).toEqual(['alpha', 'mid', 'zeta']);
    expect(registry.list('active').map((n) => n.nodeId)).toEqual(['alpha', 'zeta']);
    expect(registry.list('inactive').map((n) => n.nodeId)).toEqual(['mid']);
  });
});
