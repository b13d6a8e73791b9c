/**
 * A HeadConnection that imports the gRPC code and connects on its first use.
 * `orion build --head` whose actions the local cache serves whole (a warm CI
 * checkout, a no-op, an edit that only re-runs a step) then neither parses the
 * generated client code (~1 MB) nor opens a channel: only what misses locally
 * goes to the head. The first use waits for the head to answer (head-probe.ts);
 * a head that does not within `connectTimeoutMs` fails every use with one fatal
 * error, which ends the build with one message.
 */
import type { HeadConnection } from './head-connection.js';
import type { DagClient, DagRun } from './dag-client.js';

type ConnectOptions = Parameters<typeof import('./head-connection.js').connectToHead>[0] & {
  /** How long the first use waits for the head to answer (default 15 s). */
  connectTimeoutMs?: number;
  /** Stops that wait (the build's signal). */
  signal?: AbortSignal;
  /** Told once when the head did not answer the first try (see head-probe.ts). */
  onWaiting?(reason: string): void;
};

export function lazyHeadConnection(o: ConnectOptions, load = () => import('./head-connection.js')): HeadConnection {
  let connected: HeadConnection | undefined;
  let connecting: Promise<HeadConnection> | undefined;
  let closed = false;
  // Closing stops a wait for the head (a build that ended without it must not wait for it).
  const closing = new AbortController();
  const waitSignal = o.signal ? AbortSignal.any([o.signal, closing.signal]) : closing.signal;
  const head = (): Promise<HeadConnection> =>
    (connecting ??= load().then(async (m) => {
      const h = m.connectToHead(o);
      connected = h;
      if (closed) h.close();
      await h.ready({ timeoutMs: o.connectTimeoutMs ?? 15_000, signal: waitSignal, onWaiting: o.onWaiting });
      return h;
    }));

  const dagClient: DagClient | undefined = o.dag
    ? {
        submit(req, onEvent, signal): DagRun {
          const run = head().then((h) => h.dagClient!.submit(req, onEvent, signal));
          const finished = run.then((r) => r.finished);
          // A caller whose submission was refused (accepted rejects) never waits for the end.
          finished.catch(() => undefined);
          return { accepted: run.then((r) => r.accepted), finished };
        },
        report: async (r) => (await head()).dagClient!.report(r),
        prefetch: async (r) => (await head()).dagClient!.prefetch(r),
        close: () => connected?.dagClient?.close(),
      }
    : undefined;

  return {
    remoteExecutor: {
      run: async (a, key, signal) => (await head()).remoteExecutor.run(a, key, signal),
      uploadedBytes: () => connected?.remoteExecutor.uploadedBytes() ?? 0,
      uploadTree: async (files) => (await head()).remoteExecutor.uploadTree(files),
      ensure: async (digests, source) => (await head()).remoteExecutor.ensure(digests, source),
      close: () => connected?.remoteExecutor.close(),
    },
    remoteCache: {
      get: async (key, a) => (await head()).remoteCache.get(key, a),
      fetch: async (result) => (await head()).remoteCache.fetch(result),
      put: async (key, result) => (await head()).remoteCache.put?.(key, result),
    },
    dagClient,
    prefetchTree: o.dag ? async (files, signal, parallelism) => (await head()).prefetchTree!(files, signal, parallelism) : undefined,
    ready: async () => void (await head()),
    close() {
      closed = true;
      closing.abort();
      connected?.close();
    },
  };
}
