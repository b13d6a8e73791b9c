/**
 * Everything `orion build --head` needs to talk to a head: the remote CAS,
 * the REAPI executor, the whole-DAG client and the remote action cache.
 * Kept out of the local build path: the command imports this module only
 * with --head, so a local build does not load gRPC or the generated client code.
 */
import { Metadata } from '@grpc/grpc-js';
import { loadClientAuth, type ClientAuthOptions } from '../../common/credentials.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { createMeteredBlobStore } from '../../cas/metered-blob-store.js';
import type { BuildAction } from '../../dag-extractor/types.js';
import { CapabilitiesClient } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { createGrpcBlobStore } from '../../proto/grpc-blob-store.js';
import { fromServiceError } from '../../proto/grpc-status.js';
import { buildPriorities, type RemoteActionCache } from './build-runner.js';
import { createDagClient, type DagClient } from './dag-client.js';
import type { ProjectFiles } from './project-files.js';
import { reachHead } from './head-probe.js';
import { createRemoteActionCache } from './remote-action-cache.js';
import { createRemoteExecutor, type RemoteExecutor } from './remote-executor.js';

export interface HeadConnection {
  remoteExecutor: RemoteExecutor;
  remoteCache: RemoteActionCache;
  /** Undefined with --no-dag. */
  dagClient?: DagClient;
  /**
   * Uploads the tree `files` sees and asks the head's nodes to fetch it now (Builds.Prefetch),
   * ahead of the DAG; resolves to how many nodes were asked. Undefined with --no-dag.
   */
  prefetchTree?(files: ProjectFiles, signal: AbortSignal, parallelism?: number): Promise<number>;
  /** Resolves once the head answers, trying for `timeoutMs`; else throws a fatal error (head-probe.ts). */
  ready(o: { timeoutMs: number; signal?: AbortSignal; onWaiting?(reason: string): void }): Promise<void>;
  close(): void;
}

export function connectToHead(o: {
  head: string;
  auth: ClientAuthOptions;
  dag: boolean;
  buildId: string;
  /** The build's actions (read at the first Execute: the connection may start before the graph is known). */
  actions: () => BuildAction[];
  /** Expected milliseconds of each action, for the priority sent with each Execute (default: one unit per action). */
  estimate?: (a: BuildAction) => number;
  localCas: BlobStore;
  files: ProjectFiles;
  meter: { read(n: number): void; written(n: number): void };
  onStage: (a: BuildAction, stage: 'queued' | 'executing', worker?: string) => void;
}): HeadConnection {
  const { credentials, channelOptions } = loadClientAuth(o.auth);
  const remote = createMeteredBlobStore(createGrpcBlobStore({ address: o.head, credentials, channelOptions }), o.meter);
  let chain: Map<string, number> | undefined;
  const remoteExecutor = createRemoteExecutor({
    priorityOf: (a) => -((chain ??= buildPriorities(o.actions(), o.estimate)).get(a.id) ?? 0),
    address: o.head,
    credentials,
    channelOptions,
    remote,
    local: o.localCas,
    files: o.files,
    buildId: o.buildId,
    onStage: o.onStage,
  });
  const dagClient = o.dag ? createDagClient({ address: o.head, credentials, channelOptions }) : undefined;
  const remoteCache = createRemoteActionCache({ address: o.head, credentials, channelOptions, remote, local: o.localCas, buildId: o.buildId });
  return {
    remoteExecutor,
    remoteCache,
    dagClient,
    prefetchTree: dagClient
      ? async (files, signal, parallelism) => {
          const sourceRoot = await remoteExecutor.uploadTree(files);
          return signal.aborted ? 0 : dagClient.prefetch({ buildId: o.buildId, sourceRoot, parallelism });
        }
      : undefined,
    async ready({ timeoutMs, signal, onWaiting }) {
      const caps = new CapabilitiesClient(o.head, credentials, channelOptions);
      const ask = (deadline: number, stop?: AbortSignal) =>
        new Promise<void>((resolve, reject) => {
          const call = caps.getCapabilities({ instanceName: '' }, new Metadata(), { deadline }, (err) => {
            stop?.removeEventListener('abort', cancel);
            if (err) reject(fromServiceError(err, 'GetCapabilities'));
            else resolve();
          });
          const cancel = () => call.cancel();
          stop?.addEventListener('abort', cancel, { once: true });
        });
      try {
        await reachHead({ address: o.head, timeoutMs, ask, signal, onWaiting });
      } finally {
        caps.close();
      }
    },
    close() {
      remoteExecutor.close();
      dagClient?.close();
      remote.close();
    },
  };
}
