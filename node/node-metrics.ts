/** A node's Prometheus metrics, gathered by decorators around its executor and its view of the head's CAS. */
import { createMetricsRegistry, type MetricsRegistry } from '../common/metrics.js';
import type { ByteMeter } from '../cas/metered-blob-store.js';
import { statusOf, codeName } from '../common/errors.js';
import type { Executor } from './executor.js';

export interface NodeMetrics {
  registry: MetricsRegistry;
  /** Bytes fetched from (read) and uploaded to (written) the head's CAS. */
  headCas: ByteMeter;
  /** Wraps an executor to count running actions, outcomes and durations. */
  meter(executor: Executor): Executor;
}

export function createNodeMetrics(o: { slots: number }): NodeMetrics {
  const m = createMetricsRegistry();
  m.gauge('orion_node_slots', 'Actions this node runs at once.', (g) => g.set(o.slots));
  const running = m.gauge('orion_node_running_actions', 'Actions executing on this node now.');
  const actions = m.counter('orion_node_actions_total', 'Actions this node finished, by result (ok, failed: nonzero exit, error: could not run).');
  const durations = m.histogram('orion_node_action_duration_seconds', 'Wall time per action on this node (fetching inputs, running, uploading outputs).');
  const phases = m.histogram('orion_node_action_phase_seconds', 'Time per action phase: fetch (inputs), execute, upload (outputs).');
  const fetched = m.counter('orion_node_cas_bytes_fetched_total', 'Bytes downloaded from the head\'s CAS (inputs).');
  const prefetches = m.counter('orion_node_tree_prefetches_total', 'Trees fetched ahead of their build (Builds.Prefetch), by result (ok, error).');
  const uploaded = m.counter('orion_node_cas_bytes_uploaded_total', 'Bytes uploaded to the head\'s CAS (outputs, stdout, stderr).');
  return {
    registry: m,
    headCas: { read: (n) => fetched.inc(undefined, n), written: (n) => uploaded.inc(undefined, n) },
    meter(executor) {
      return {
        busy: () => executor.busy(),
        async prefetch(root, buildId, signal) {
          try {
            const bytes = await executor.prefetch(root, buildId, signal);
            prefetches.inc({ result: 'ok' });
            return bytes;
          } catch (err) {
            prefetches.inc({ result: 'error' });
            throw err;
          }
        },
        async execute(a, signal) {
          running.inc();
          const t0 = Date.now();
          try {
            const r = await executor.execute(a, signal);
            actions.inc({ result: r.exitCode === 0 ? 'ok' : 'failed' });
            const md = r.executionMetadata;
            const span = (from?: number, to?: number) => (from !== undefined && to !== undefined && to >= from ? (to - from) / 1000 : undefined);
            for (const [phase, s] of [
              ['fetch', span(md?.inputFetchStartMs, md?.inputFetchCompletedMs)],
              ['execute', span(md?.executionStartMs, md?.executionCompletedMs)],
              ['upload', span(md?.outputUploadStartMs, md?.outputUploadCompletedMs)],
            ] as const) {
              if (s !== undefined) phases.observe(s, { phase });
            }
            return r;
          } catch (err) {
            actions.inc({ result: 'error', code: codeName(statusOf(err)) });
            throw err;
          } finally {
            running.dec();
            durations.observe((Date.now() - t0) / 1000);
          }
        },
      };
    },
  };
}
