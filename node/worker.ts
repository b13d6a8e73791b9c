import os from 'node:os';
import type { ChannelCredentials, ClientDuplexStream, ClientOptions } from '@grpc/grpc-js';
import { WorkerClient, type HeadMessage, type WorkerMessage, type AssignAction, type PrefetchTree } from '../proto/gen/orion/v1/worker.js';
import { Code, OrionError, messageOf, statusOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { actionFromPb, actionResultToPb, commandFromPb, digestFromPb, statusToPb } from '../proto/convert.js';
import { digestKey } from '../cas/digest.js';
import { fromServiceError } from '../proto/grpc-status.js';
import type { Executor } from './executor.js';

export interface WorkerLoopOptions {
  headAddress: string;
  credentials: ChannelCredentials;
  /** Extra client options (the bearer-token interceptor, common/credentials.ts). */
  channelOptions?: Partial<ClientOptions>;
  nodeId: string;
  slots: number;
  /** Where this node serves its CAS to peers ('' when it does not). */
  address: string;
  /** Told the head's peer token at each registration. */
  onPeerToken?(token: string | undefined): void;
  /** Whether to ask the head for no new actions for now (Heartbeat.draining). */
  draining?(): boolean;
  executor: Executor;
  log: Logger;
  signal: AbortSignal;
  /** Reconnect backoff bounds. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  random?: () => number;
}

export interface WorkerLoop {
  /** Resolves when the signal aborts and in-flight actions were cancelled. */
  done: Promise<void>;
  running(): number;
  /** Whether the node is registered and its stream to the head is open (its health). */
  connected(): boolean;
  /** Sends a heartbeat now (`draining` changed). */
  beat(): void;
}

function convertAssignment(a: AssignAction) {
  if (!a.action || !a.command) throw new OrionError(Code.INVALID_ARGUMENT, `assignment ${a.assignmentId} lacks its action or command`);
  return {
    assignmentId: a.assignmentId,
    actionDigest: digestFromPb(a.actionDigest, 'action_digest'),
    action: actionFromPb(a.action),
    command: commandFromPb(a.command),
    execRootDigest: a.execRootDigest ? digestFromPb(a.execRootDigest, 'exec_root_digest') : undefined,
    buildId: a.buildId || undefined,
    peerSources: peerSourcesOf(a),
  };
}

function peerSourcesOf(a: AssignAction): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [i, p] of a.peerBlobs.slice(0, 100_000).entries()) {
    const key = digestKey(digestFromPb(p.digest, `peer_blobs[${i}].digest`));
    if (p.address) out.set(key, [...(out.get(key) ?? []), p.address]);
  }
  return out;
}

export function startWorkerLoop(opts: WorkerLoopOptions): WorkerLoop {
  const client = new WorkerClient(opts.headAddress, opts.credentials, { 'grpc.max_receive_message_length': 64 * 1024 * 1024, ...opts.channelOptions });
  const inFlight = new Map<string, AbortController>();
  const log = opts.log.child({ nodeId: opts.nodeId });
  const minBackoff = opts.minBackoffMs ?? 200;
  const maxBackoff = opts.maxBackoffMs ?? 10_000;
  const random = opts.random ?? Math.random;
  let connected = false;
  /** Whether the head ever took this node's registration (the log says "lost" only then). */
  let registeredOnce = false;
  let beatNow = () => undefined as void;

  async function session(): Promise<void> {
    const reg = await new Promise<{ sessionId: string; heartbeatIntervalMs: number; peerToken: string }>((resolve, reject) => {
      client.register(
        { nodeId: opts.nodeId, address: opts.address, slots: opts.slots, platform: { properties: [{ name: 'OSFamily', value: os.platform() }, { name: 'ISA', value: os.arch() }] }, metadata: { hostname: os.hostname(), pid: String(process.pid) } },
        (err, res) => (err ? reject(fromServiceError(err, 'Register')) : resolve(res)),
      );
    });
    log.info({ head: opts.headAddress, slots: opts.slots }, 'registered with head');
    registeredOnce = true;
    opts.onPeerToken?.(reg.peerToken || undefined);
    const stream: ClientDuplexStream<WorkerMessage, HeadMessage> = client.connect();
    const send = (m: WorkerMessage) => {
      if (!stream.writableEnded && !stream.destroyed) stream.write(m);
    };
    send({ hello: { nodeId: opts.nodeId, sessionId: reg.sessionId } });
    connected = true;
    const beat = () => send({ heartbeat: { running: inFlight.size, load: os.loadavg()[0] ?? 0, assignmentIds: [...inFlight.keys()], draining: opts.draining?.() ?? false } });
    beatNow = beat;
    beat();
    const timer = setInterval(beat, reg.heartbeatIntervalMs);

    const runAssignment = async (a: AssignAction) => {
      const controller = new AbortController();
      const moved = { peer: 0, head: 0 };
      inFlight.set(a.assignmentId, controller);
      const alog = log.child({ ...(a.buildId ? { buildId: a.buildId } : {}), assignmentId: a.assignmentId, actionDigest: a.actionDigest?.hash });
      try {
        const assignment = { ...convertAssignment(a), onTransfer: (p: number, h: number) => ((moved.peer = p), (moved.head = h)) };
        const result = await opts.executor.execute(assignment, controller.signal);
        alog.debug({ exitCode: result.exitCode, peerBytes: moved.peer, headBytes: moved.head }, 'action finished');
        send({ finished: { assignmentId: a.assignmentId, result: actionResultToPb(result), status: undefined, peerBytes: moved.peer, headBytes: moved.head } });
      } catch (err) {
        const code = statusOf(err);
        alog.warn({ code, err: (err as Error).message }, 'action could not be executed');
        if (!controller.signal.aborted || code !== Code.CANCELLED) {
          send({ finished: { assignmentId: a.assignmentId, result: undefined, status: statusToPb(code === Code.OK ? Code.INTERNAL : code, (err as Error).message, err instanceof OrionError ? err.missing : undefined, err instanceof OrionError ? err.toolchain : undefined), peerBytes: moved.peer, headBytes: moved.head } });
        }
      } finally {
        inFlight.delete(a.assignmentId);
      }
    };

    const prefetch = (p: PrefetchTree) => {
      const t0 = Date.now();
      const plog = log.child({ ...(p.buildId ? { buildId: p.buildId } : {}) });
      try {
        const root = digestFromPb(p.root, 'root');
        opts.executor.prefetch(root, p.buildId || undefined, opts.signal).then(
          (headBytes) => plog.info({ root: digestKey(root), ms: Date.now() - t0, headBytes }, 'prefetched a tree'),
          (err) => plog.warn({ err: (err as Error).message }, 'could not prefetch a tree; its build fetches it action by action'),
        );
      } catch (err) {
        plog.warn({ err: (err as Error).message }, 'ignoring an invalid prefetch request');
      }
    };

    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        for (const c of inFlight.values()) c.abort();
        stream.end();
      };
      opts.signal.addEventListener('abort', onAbort, { once: true });
      stream.on('data', (m: HeadMessage) => {
        if (m.assign) void runAssignment(m.assign);
        else if (m.cancel) inFlight.get(m.cancel.assignmentId)?.abort();
        else if (m.prefetch) prefetch(m.prefetch);
      });
      const finish = (err?: Error) => {
        connected = false;
        beatNow = () => undefined;
        clearInterval(timer);
        opts.signal.removeEventListener('abort', onAbort);
        if (err && !opts.signal.aborted) reject(err);
        else resolve();
      };
      stream.on('end', () => finish(opts.signal.aborted ? undefined : new OrionError(Code.UNAVAILABLE, 'head closed the stream')));
      stream.on('error', (err) => finish(fromServiceError(err, 'Connect')));
    });
  }

  const done = (async () => {
    let failures = 0;
    while (!opts.signal.aborted) {
      const started = Date.now();
      try {
        await session();
      } catch (err) {
        if (opts.signal.aborted) break;
        // In-flight actions of a lost session are requeued by the head; drop them here.
        for (const c of inFlight.values()) c.abort();
        // Wrong or missing credentials do not fix themselves: stop and say so.
        const code = statusOf(err);
        if (code === Code.UNAUTHENTICATED || code === Code.PERMISSION_DENIED) {
          while (inFlight.size > 0) await new Promise((r) => setTimeout(r, 20));
          client.close();
          throw new OrionError(code, `the head at ${opts.headAddress} refused this node: ${(err as Error).message}`, {
            hint: 'give the node a node credential: --tls-cert/--tls-key of a certificate with OU=node, or a node token in --token-file or ORION_TOKEN',
          });
        }
        if (Date.now() - started > 5000) failures = 0;
        failures++;
        const backoff = Math.min(maxBackoff, minBackoff * 2 ** Math.min(failures, 10)) * (0.5 + random() / 2);
        log.warn({ err: messageOf(err), retryInMs: Math.round(backoff) }, registeredOnce ? 'lost the head; reconnecting' : `cannot reach the head at ${opts.headAddress} yet; retrying`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, backoff);
          opts.signal.addEventListener('abort', () => { clearTimeout(t); r(); }, { once: true });
        });
      }
    }
    // Wait for cancelled actions to clean their directories.
    while (inFlight.size > 0) await new Promise((r) => setTimeout(r, 20));
    client.close();
  })();

  return { done, running: () => inFlight.size, connected: () => connected, beat: () => beatNow() };
}
