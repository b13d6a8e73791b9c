/** The head's Prometheus metrics: scheduler queue, running actions, cache hit ratio, durations, CAS bytes, nodes. */
import { createMetricsRegistry, type MetricsRegistry } from '../common/metrics.js';
import type { ByteMeter } from '../cas/metered-blob-store.js';
import type { NodeRegistry, NodeStatus } from './node-registry.js';
import type { Scheduler } from './scheduler.js';
import type { BuildTracker } from './build-tracker.js';
import type { TrimResult } from '../cas/store-trim.js';

export interface HeadMetrics {
  registry: MetricsRegistry;
  /** Bytes in and out of the head's CAS (every service: CAS, ByteStream, node uploads). */
  cas: ByteMeter;
  actionCacheLookup(hit: boolean): void;
  actionExecuted(durationMs: number, state: 'done' | 'failed', nodeId: string | undefined): void;
  /** The outcome of a trim of the CAS (cas/store-trim.ts) and the size it keeps to. */
  casTrimmed(r: TrimResult, maxBytes: number): void;
}

const NODE_STATUSES: NodeStatus[] = ['active', 'inactive', 'disconnected'];

export function createHeadMetrics(deps: { scheduler: () => Scheduler; registry: NodeRegistry; builds: () => BuildTracker | undefined }): HeadMetrics {
  const m = createMetricsRegistry();
  m.gauge('orion_scheduler_queue_length', 'Actions waiting for a free node slot.', (g) => g.set(deps.scheduler().queueLength()));
  m.gauge('orion_scheduler_running_actions', 'Actions assigned to nodes and not finished yet.', (g) => g.set(deps.scheduler().runningCount()));
  m.gauge('orion_nodes', 'Registered nodes by status.', (g) => {
    const nodes = deps.registry.list();
    for (const s of NODE_STATUSES) g.set(nodes.filter((n) => n.status === s).length, { status: s });
  });
  m.gauge('orion_node_slots', 'Slots of active nodes (the cluster\'s capacity).', (g) => g.set(deps.registry.list('active').reduce((n, x) => n + x.slots, 0)));
  m.gauge('orion_builds_in_progress', 'Builds with actions queued or running, or recent activity.', (g) => g.set(deps.builds()?.list(false).length ?? 0));
  const lookups = m.counter('orion_action_cache_lookups_total', 'Action cache lookups (GetActionResult and Execute\'s cache check).');
  const hits = m.counter('orion_action_cache_hits_total', 'Action cache lookups that found a result.');
  m.gauge('orion_action_cache_hit_ratio', 'Action cache hits / lookups since the head started (0 before any lookup).', (g) => {
    const n = lookups.get();
    g.set(n === 0 ? 0 : hits.get() / n);
  });
  const durations = m.histogram('orion_action_duration_seconds', 'Time from assignment to a node until its result was accepted, by result.');
  const casIn = m.counter('orion_cas_bytes_received_total', 'Bytes written into the head\'s CAS.');
  const casOut = m.counter('orion_cas_bytes_sent_total', 'Bytes read from the head\'s CAS.');
  const casBytes = m.gauge('orion_cas_bytes', 'Bytes of blobs in the head\'s CAS at its last trim.');
  const casMax = m.gauge('orion_cas_max_bytes', 'The size the head\'s CAS is trimmed to (--cas-size).');
  const casRemoved = m.counter('orion_cas_blobs_removed_total', 'Blobs the head removed from its CAS, least recently used first.');
  return {
    registry: m,
    casTrimmed(r, maxBytes) {
      casBytes.set(r.bytesAfter);
      casMax.set(maxBytes);
      if (r.removed > 0) casRemoved.inc(undefined, r.removed);
    },
    cas: { read: (n) => casOut.inc(undefined, n), written: (n) => casIn.inc(undefined, n) },
    actionCacheLookup(hit) {
      lookups.inc();
      if (hit) hits.inc();
    },
    actionExecuted(ms, state) {
      durations.observe(ms / 1000, { result: state === 'done' ? 'ok' : 'failed' });
    },
  };
}
