import { randomUUID } from 'node:crypto';
import type { Clock } from '../common/clock.js';
import { OrionError, Code } from '../common/errors.js';
import type { Platform } from '../cas/types.js';

export type NodeStatus = 'active' | 'inactive' | 'disconnected';

export interface NodeRegistration {
  nodeId: string;
  address: string;
  slots: number;
  platform?: Platform;
  metadata: Record<string, string>;
}

export interface NodeRecord extends NodeRegistration {
  sessionId: string;
  status: NodeStatus;
  registeredAt: number;
  lastHeartbeat: number;
  /** Assignment ids the head believes are running there. */
  running: Set<string>;
  load: number;
  /** Whether a Connect stream is attached right now. */
  connected: boolean;
  /** Why the head stopped trusting this node (it returned data that failed verification). */
  quarantined?: string;
  /** The node asked for no new actions until it trimmed its local CAS (Heartbeat.draining). */
  draining?: boolean;
}

export interface NodeRegistryOptions {
  clock: Clock;
  heartbeatTimeoutMs: number;
}

export interface NodeRegistryEvents {
  /** The node stopped being usable (missed heartbeats, stream dropped): requeue its work. */
  lost(nodeId: string, reason: string): void;
  /** The node can take work (connected, or a slot freed). */
  available(nodeId: string): void;
}

export interface NodeRegistry {
  register(reg: NodeRegistration): NodeRecord;
  /** The node's Connect stream opened with the session id Register returned. */
  attach(nodeId: string, sessionId: string): NodeRecord;
  /** The node's stream closed. */
  detach(nodeId: string, sessionId: string, reason: string): void;
  heartbeat(nodeId: string, sessionId: string, hb: { load: number; draining?: boolean }): void;
  get(nodeId: string): NodeRecord | undefined;
  list(status?: NodeStatus): NodeRecord[];
  /** Active nodes with at least one free slot (and not draining). */
  withFreeSlots(): NodeRecord[];
  /** Stops sending work to a node whose results failed verification; its running work is requeued. Lasts for the head's lifetime, across re-registrations. */
  quarantine(nodeId: string, reason: string): void;
  /** Checks heartbeat deadlines; call periodically (the head does, every timeout/4). */
  sweep(): void;
  on<K extends keyof NodeRegistryEvents>(event: K, fn: NodeRegistryEvents[K]): void;
}

export function createNodeRegistry(opts: NodeRegistryOptions): NodeRegistry {
  const nodes = new Map<string, NodeRecord>();
  const quarantined = new Map<string, string>();
  const listeners: { [K in keyof NodeRegistryEvents]: NodeRegistryEvents[K][] } = { lost: [], available: [] };
  const emitLost = (id: string, reason: string) => listeners.lost.forEach((fn) => fn(id, reason));
  const emitAvailable = (id: string) => listeners.available.forEach((fn) => fn(id));

  function session(nodeId: string, sessionId: string): NodeRecord {
    const n = nodes.get(nodeId);
    if (!n) throw new OrionError(Code.NOT_FOUND, `node ${JSON.stringify(nodeId)} is not registered`, { hint: 'call Register first' });
    if (n.sessionId !== sessionId) {
      throw new OrionError(Code.FAILED_PRECONDITION, `stale session for node ${JSON.stringify(nodeId)}: it registered again`);
    }
    return n;
  }

  function markInactive(n: NodeRecord, reason: string) {
    if (n.status !== 'active') return;
    n.status = 'inactive';
    emitLost(n.nodeId, reason);
  }

  return {
    register(reg) {
      if (!reg.nodeId || !/^[A-Za-z0-9._:@-]{1,128}$/.test(reg.nodeId)) {
        throw new OrionError(Code.INVALID_ARGUMENT, `invalid node id ${JSON.stringify(reg.nodeId)}: use 1-128 characters of [A-Za-z0-9._:@-]`);
      }
      if (!Number.isInteger(reg.slots) || reg.slots < 1 || reg.slots > 4096) {
        throw new OrionError(Code.INVALID_ARGUMENT, `invalid slot count ${reg.slots} for node ${reg.nodeId}: must be 1..4096`);
      }
      const previous = nodes.get(reg.nodeId);
      if (previous) {
        // A node that registers again restarted: whatever it was running is gone.
        const wasActive = previous.status === 'active';
        previous.status = 'inactive';
        if (wasActive || previous.running.size > 0) emitLost(reg.nodeId, 'node registered again');
      }
      const now = opts.clock.now();
      const rec: NodeRecord = {
        ...reg,
        sessionId: randomUUID(),
        status: 'inactive',
        registeredAt: now,
        lastHeartbeat: now,
        running: new Set(),
        load: 0,
        connected: false,
        quarantined: quarantined.get(reg.nodeId),
      };
      nodes.set(reg.nodeId, rec);
      return rec;
    },
    attach(nodeId, sessionId) {
      const n = session(nodeId, sessionId);
      n.connected = true;
      n.status = 'active';
      n.lastHeartbeat = opts.clock.now();
      emitAvailable(nodeId);
      return n;
    },
    detach(nodeId, sessionId, reason) {
      const n = nodes.get(nodeId);
      if (!n || n.sessionId !== sessionId) return;
      n.connected = false;
      markInactive(n, `stream closed: ${reason}`);
    },
    heartbeat(nodeId, sessionId, hb) {
      const n = session(nodeId, sessionId);
      n.lastHeartbeat = opts.clock.now();
      n.load = hb.load;
      const drained = n.draining && !hb.draining;
      n.draining = hb.draining || undefined;
      if (n.status !== 'active' && n.connected && !n.quarantined) {
        n.status = 'active';
        emitAvailable(nodeId);
      } else if (drained && n.status === 'active') emitAvailable(nodeId);
    },
    get: (id) => nodes.get(id),
    list(status) {
      const all = [...nodes.values()].sort((a, b) => a.nodeId.localeCompare(b.nodeId));
      return status ? all.filter((n) => n.status === status) : all;
    },
    withFreeSlots() {
      return [...nodes.values()].filter((n) => n.status === 'active' && n.connected && !n.quarantined && !n.draining && n.running.size < n.slots);
    },
    quarantine(nodeId, reason) {
      quarantined.set(nodeId, reason);
      const n = nodes.get(nodeId);
      if (!n) return;
      n.quarantined = reason;
      if (n.status === 'active') markInactive(n, `quarantined: ${reason}`);
    },
    sweep() {
      const now = opts.clock.now();
      for (const n of nodes.values()) {
        const silentFor = now - n.lastHeartbeat;
        if (n.status === 'active' && silentFor > opts.heartbeatTimeoutMs) {
          markInactive(n, `no heartbeat for ${silentFor} ms (timeout ${opts.heartbeatTimeoutMs} ms)`);
        } else if (n.status === 'inactive' && silentFor > 2 * opts.heartbeatTimeoutMs) {
          n.status = 'disconnected';
        }
      }
    },
    on(event, fn) {
      (listeners[event] as unknown[]).push(fn);
    },
  };
}
