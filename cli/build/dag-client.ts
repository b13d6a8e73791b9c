/**
 * The client end of the orion.v1 Builds service: submits a whole DAG, turns
 * the head's event stream into domain events, and reports the steps the client
 * runs itself.
 */
import type { ChannelCredentials, ClientOptions } from '@grpc/grpc-js';
import { BuildEvent_Kind, BuildsClient, type BuildEvent, type DagAction } from '../../proto/gen/orion/v1/build.js';
import { actionResultFromPb, digestFromPb, digestToPb, errorFromStatus } from '../../proto/convert.js';
import { fromServiceError } from '../../proto/grpc-status.js';
import { Code, OrionError } from '../../common/errors.js';
import type { ActionResult, Digest } from '../../cas/types.js';

export interface DagSpec {
  id: string;
  label: string;
  deps: string[];
  /** Run by the client (the rest of the fields are then unused). */
  client: boolean;
  commandDigest?: Digest;
  inputRootDigest?: Digest;
  producedInputs: { path: string; producer: string }[];
  depfile?: string;
  /** The client's guess of its duration (ms), for the head's priorities until it has measured the action. */
  estimatedMs?: number;
  /** A client step make will probably find up to date: the actions its decision waits for (DagAction.decide_after). */
  decideAfter?: string[];
}

export type DagClientEvent =
  | { kind: 'queued'; actionId: string }
  | { kind: 'started'; actionId: string; nodeId: string; attempt: number }
  | { kind: 'retried'; actionId: string; message: string }
  | { kind: 'done'; actionId: string; cached: boolean; actionDigest: Digest; result: ActionResult; nodeId: string }
  | { kind: 'failed'; actionId: string; result?: ActionResult; error?: OrionError; nodeId: string }
  | { kind: 'skipped'; actionId: string; message: string }
  /** No node has the compiler the action's key names: this process runs it and reports it. */
  | { kind: 'run-here'; actionId: string; message: string };

export interface DagClientSummary {
  ok: boolean;
  executed: number;
  cacheHits: number;
  peerBytes: number;
  headBytes: number;
}

export interface DagRun {
  /** Resolves once the head accepted the DAG; rejects with its error (UNIMPLEMENTED from a head without the service). */
  accepted: Promise<string>;
  /** Resolves with the head's summary at the end of the build. */
  finished: Promise<DagClientSummary>;
}

export interface DagClient {
  submit(req: { buildId: string; sourceRoot: Digest; actions: DagSpec[]; keepGoing: boolean; instanceName?: string }, onEvent: (ev: DagClientEvent) => void, signal: AbortSignal): DagRun;
  /** `upToDate`: make's rule skipped the step, decided once `decidedAfter` were done (see ClientActionReport.up_to_date). */
  report(r: { buildId: string; actionId: string; exitCode: number; written: { path: string; digest: Digest; isExecutable: boolean }[]; deleted: string[]; rekeyed: DagSpec[]; message?: string; upToDate?: { decidedAfter: string[] } }): Promise<void>;
  /** Builds.Prefetch: the head asks its nodes to fetch `sourceRoot` now; resolves to how many it asked (0 from a head without the call). */
  prefetch(req: { buildId: string; sourceRoot: Digest; instanceName?: string; parallelism?: number }): Promise<number>;
  close(): void;
}

function specToPb(s: DagSpec): DagAction {
  return {
    id: s.id,
    commandDigest: s.commandDigest ? digestToPb(s.commandDigest) : undefined,
    inputRootDigest: s.inputRootDigest ? digestToPb(s.inputRootDigest) : undefined,
    producedInputs: s.producedInputs,
    deps: s.deps,
    timeout: undefined,
    doNotCache: false,
    platform: undefined,
    depfile: s.depfile ?? '',
    label: s.label,
    client: s.client,
    estimatedMs: s.estimatedMs ?? 0,
    decideAfter: s.decideAfter ?? [],
    skippable: s.decideAfter !== undefined,
  };
}

function eventFromPb(ev: BuildEvent): DagClientEvent | undefined {
  const result = ev.result ? actionResultFromPb(ev.result) : undefined;
  switch (ev.kind) {
    case BuildEvent_Kind.QUEUED:
      return { kind: 'queued', actionId: ev.actionId };
    case BuildEvent_Kind.STARTED:
      return { kind: 'started', actionId: ev.actionId, nodeId: ev.nodeId, attempt: ev.attempt };
    case BuildEvent_Kind.RETRIED:
      return { kind: 'retried', actionId: ev.actionId, message: ev.message };
    case BuildEvent_Kind.CACHE_HIT:
    case BuildEvent_Kind.FINISHED:
      if (!result) throw new OrionError(Code.INTERNAL, `the head reported ${ev.actionId} done without a result`);
      return { kind: 'done', actionId: ev.actionId, cached: ev.kind === BuildEvent_Kind.CACHE_HIT, actionDigest: digestFromPb(ev.actionDigest, 'action_digest'), result, nodeId: ev.nodeId };
    case BuildEvent_Kind.FAILED:
      return { kind: 'failed', actionId: ev.actionId, result, error: errorFromStatus(ev.status, ev.actionId), nodeId: ev.nodeId };
    case BuildEvent_Kind.SKIPPED:
      return { kind: 'skipped', actionId: ev.actionId, message: ev.message };
    case BuildEvent_Kind.RUN_ON_CLIENT:
      return { kind: 'run-here', actionId: ev.actionId, message: ev.message };
    default:
      return undefined;
  }
}

export function createDagClient(opts: { address: string; credentials: ChannelCredentials; channelOptions?: Partial<ClientOptions> }): DagClient {
  const client = new BuildsClient(opts.address, opts.credentials, { 'grpc.max_receive_message_length': 64 * 1024 * 1024, 'grpc.max_send_message_length': 64 * 1024 * 1024, ...opts.channelOptions });
  return {
    submit(req, onEvent, signal) {
      let accept!: (id: string) => void;
      let refuse!: (err: unknown) => void;
      const accepted = new Promise<string>((a, r) => ((accept = a), (refuse = r)));
      accepted.catch(() => undefined);
      const finished = new Promise<DagClientSummary>((resolve, reject) => {
        const stream = client.build({ instanceName: req.instanceName ?? '', buildId: req.buildId, sourceRoot: digestToPb(req.sourceRoot), actions: req.actions.map(specToPb), keepGoing: req.keepGoing, skipCacheLookup: false });
        let summary: DagClientSummary | undefined;
        let failure: unknown;
        const onAbort = () => stream.cancel();
        signal.addEventListener('abort', onAbort, { once: true });
        stream.on('data', (ev: BuildEvent) => {
          if (ev.kind === BuildEvent_Kind.ACCEPTED) return accept(ev.buildId);
          if (ev.kind === BuildEvent_Kind.BUILD_FINISHED) {
            const s = ev.summary;
            summary = { ok: s?.ok ?? false, executed: s?.executed ?? 0, cacheHits: s?.cacheHits ?? 0, peerBytes: s?.peerBytes ?? 0, headBytes: s?.headBytes ?? 0 };
            return;
          }
          try {
            const e = eventFromPb(ev);
            if (e) onEvent(e);
          } catch (err) {
            failure ??= err;
            stream.cancel();
          }
        });
        stream.on('error', (err) => {
          signal.removeEventListener('abort', onAbort);
          const e = fromServiceError(err, 'the head\'s Builds service');
          refuse(e);
          reject(failure ?? e);
        });
        stream.on('end', () => {
          signal.removeEventListener('abort', onAbort);
          if (summary && !failure) resolve(summary);
          else {
            const e = failure ?? new OrionError(Code.UNAVAILABLE, 'the build stream ended before the build finished');
            refuse(e);
            reject(e);
          }
        });
      });
      finished.catch(() => undefined);
      return { accepted, finished };
    },
    report(r) {
      return new Promise((resolve, reject) => {
        client.reportClientAction(
          {
            buildId: r.buildId,
            actionId: r.actionId,
            exitCode: r.exitCode,
            written: r.written.map((f) => ({ path: f.path, digest: digestToPb(f.digest), isExecutable: f.isExecutable, contents: Buffer.alloc(0), nodeProperties: undefined })),
            deleted: r.deleted,
            rekeyed: r.rekeyed.map(specToPb),
            message: r.message ?? '',
            upToDate: r.upToDate !== undefined,
            decidedAfter: r.upToDate?.decidedAfter ?? [],
          },
          (err) => (err ? reject(fromServiceError(err, `reporting ${r.actionId} to the head`)) : resolve()),
        );
      });
    },
    prefetch(req) {
      return new Promise((resolve, reject) => {
        client.prefetch({ instanceName: req.instanceName ?? '', sourceRoot: digestToPb(req.sourceRoot), buildId: req.buildId, parallelism: req.parallelism ?? 0 }, (err, res) => {
          if (!err) return resolve(res.nodes);
          const e = fromServiceError(err, 'Prefetch');
          // A head from before the call: the build goes on without it.
          if (e.code === Code.UNIMPLEMENTED) resolve(0);
          else reject(e);
        });
      });
    },
    close: () => client.close(),
  };
}
