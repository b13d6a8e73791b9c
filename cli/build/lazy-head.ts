/**
 * A HeadConnection that imports the gRPC code and connects on its first use.
 * `orion build --head` whose actions the local cache serves whole (a warm CI
 * checkout, a no-op, an edit that only re-runs a step) then neither parses the
 * generated client code (~1 MB) nor opens a channel: only what misses locally
 * goes to the head. A head that cannot be reached fails the first action that
 * needs it, as before.
 */
import type { HeadConnection } from './head-connection.js';
import type { DagClient, DagRun } from './dag-client.js';

type ConnectOptions = Parameters<typeof import('./head-connection.js').connectToHead>[0];

export function lazyHeadConnection(o: ConnectOptions, load = () => import('./head-connection.js')): HeadConnection {
  let connected: HeadConnection | undefined;
  let connecting: Promise<HeadConnection> | undefined;
  let closed = false;
  const head = (): Promise<HeadConnection> =>
    (connecting ??= load().then((m) => {
      connected = m.connectToHead(o);
      if (closed) connected.close();
      return connected;
    }));

  const dagClient: DagClient | undefined = o.dag
    ? {
        submit(req, onEvent, signal): DagRun {
          const run = head().then((h) => h.dagClient!.submit(req, onEvent, signal));
          return { accepted: run.then((r) => r.accepted), finished: run.then((r) => r.finished) };
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
    close() {
      closed = true;
      connected?.close();
    },
  };
}
