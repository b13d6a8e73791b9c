import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { HeadMessage, PeerBlob, WorkerMessage, WorkerServer } from '../proto/gen/orion/v1/worker.js';
import { Code, OrionError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { actionResultFromPb, actionToPb, commandToPb, digestToPb, errorFromStatus, platformFromPb } from '../proto/convert.js';
import { toServiceError, unary } from '../proto/grpc-status.js';
import type { NodeRecord, NodeRegistry } from './node-registry.js';
import { callerOf, nodeIdAllowed, nodeIdDenied, type Principal } from './auth.js';
import type { NodeCommand, Scheduler } from './scheduler.js';
import type { Digest } from '../cas/types.js';

export interface WorkerServiceDeps {
  registry: NodeRegistry;
  log: Logger;
  heartbeatIntervalMs: number;
  /** Handed to nodes at registration: their peer endpoints require it. */
  peerToken?: string;
  /** Set after construction: the scheduler needs `send`, the service needs the scheduler. */
  scheduler(): Scheduler;
}

export interface WorkerService {
  service: WorkerServer;
  /** Sends a command down a node's stream; false when the node has no open stream. */
  send(nodeId: string, cmd: NodeCommand): boolean;
  /** Asks a node to fetch a tree a build will use (Builds.Prefetch); false when the node has no open stream. */
  prefetch(nodeId: string, root: Digest, buildId?: string): boolean;
  /** Ends every node stream (head shutdown). */
  closeAll(): void;
}

/** Where the target node can read each of its inputs held by another live node with a peer endpoint. */
function peerBlobsFor(cmd: Extract<NodeCommand, { type: 'assign' }>, target: string, registry: NodeRegistry): PeerBlob[] {
  const out: PeerBlob[] = [];
  for (const s of cmd.execution.request.peerSources ?? []) {
    if (s.nodeId === target) continue;
    const peer = registry.get(s.nodeId);
    if (!peer?.address || peer.status !== 'active') continue;
    out.push({ digest: digestToPb(s.digest), address: peer.address });
  }
  return out;
}

function toHeadMessage(cmd: NodeCommand, target: string, registry: NodeRegistry): HeadMessage {
  if (cmd.type === 'cancel') return { cancel: { assignmentId: cmd.assignmentId } };
  const r = cmd.execution.request;
  return {
    assign: {
      assignmentId: cmd.assignmentId,
      instanceName: r.instanceName,
      actionDigest: digestToPb(r.actionDigest),
      action: actionToPb(r.action),
      command: commandToPb(r.command),
      execRootDigest: r.execRootDigest ? digestToPb(r.execRootDigest) : undefined,
      buildId: r.buildId ?? '',
      peerBlobs: peerBlobsFor(cmd, target, registry),
    },
  };
}

/** A registration is live until the registry gives the node up (silent for twice the heartbeat timeout). */
const isLive = (n: NodeRecord | undefined) => n !== undefined && (n.connected || n.status !== 'disconnected');

export function createWorkerService(deps: WorkerServiceDeps): WorkerService {
  const streams = new Map<string, ServerDuplexStream<WorkerMessage, HeadMessage>>();
  /** The identity (auth.ts Principal.identity) that registered each node id, when the head authenticates. */
  const owners = new Map<string, string>();

  /**
   * Checks that `caller` may be node `nodeId`: its credential is bound to that id, and no
   * other identity holds a live registration of it. Anonymous callers (no authentication) pass.
   */
  function checkNodeId(caller: Principal | undefined, nodeId: string, doing: 'register' | 'connect'): void {
    if (!caller || caller.role === 'anonymous') return;
    if (!nodeIdAllowed(caller, nodeId)) throw nodeIdDenied(caller, nodeId, doing);
    const owner = owners.get(nodeId);
    if (owner === undefined || owner === caller.identity) return;
    if (doing === 'register' && !isLive(deps.registry.get(nodeId))) return;
    deps.log.warn({ nodeId, caller: caller.identity, owner }, `refused to let another credential ${doing} as a registered node`);
    throw new OrionError(Code.PERMISSION_DENIED, `node id ${JSON.stringify(nodeId)} is registered by another credential`, {
      hint: 'give each node its own id; an id becomes free once its node has been gone for twice the heartbeat timeout',
    });
  }

  function connect(call: ServerDuplexStream<WorkerMessage, HeadMessage>) {
    let nodeId: string | undefined;
    let sessionId: string | undefined;
    let closed = false;
    const close = (reason: string) => {
      if (closed) return;
      closed = true;
      if (nodeId && sessionId) {
        if (streams.get(nodeId) === call) streams.delete(nodeId);
        deps.registry.detach(nodeId, sessionId, reason);
      }
    };
    const fail = (err: unknown) => {
      call.emit('error', toServiceError(err));
      close((err as Error).message);
    };
    call.on('data', (msg: WorkerMessage) => {
      try {
        if (msg.hello) {
          if (nodeId) throw new OrionError(Code.INVALID_ARGUMENT, 'hello sent twice on one stream');
          checkNodeId(callerOf(call.metadata), msg.hello.nodeId, 'connect');
          deps.registry.attach(msg.hello.nodeId, msg.hello.sessionId);
          nodeId = msg.hello.nodeId;
          sessionId = msg.hello.sessionId;
          streams.get(nodeId)?.end();
          streams.set(nodeId, call);
          deps.log.info({ nodeId }, 'node connected');
          deps.scheduler().dispatch();
          return;
        }
        if (!nodeId || !sessionId) throw new OrionError(Code.FAILED_PRECONDITION, 'the first message on a Connect stream must be hello');
        if (msg.heartbeat) {
          deps.registry.heartbeat(nodeId, sessionId, { load: msg.heartbeat.load, draining: msg.heartbeat.draining });
        } else if (msg.finished) {
          const f = msg.finished;
          const error = errorFromStatus(f.status, `node ${nodeId}`);
          const outcome = error ? { ok: false as const, error } : f.result ? { ok: true as const, result: actionResultFromPb(f.result) } : { ok: false as const, error: new OrionError(Code.INTERNAL, `node ${nodeId} sent neither result nor status`) };
          void deps.scheduler().finished(nodeId, f.assignmentId, outcome, { peerBytes: Number(f.peerBytes), headBytes: Number(f.headBytes) });
        }
      } catch (err) {
        deps.log.warn({ nodeId, err: (err as Error).message }, 'rejecting worker stream');
        fail(err);
      }
    });
    call.on('end', () => {
      close('node closed its stream');
      call.end();
    });
    call.on('error', (err) => close(err.message));
    call.on('cancelled', () => close('stream cancelled'));
    call.on('close', () => close('stream closed'));
  }

  function write(nodeId: string, message: () => HeadMessage): boolean {
    const call = streams.get(nodeId);
    if (!call || call.destroyed || call.writableEnded) return false;
    call.write(message());
    return true;
  }

  return {
    service: {
      register: unary(async (req, call) => {
        const caller = callerOf(call.metadata);
        checkNodeId(caller, req.nodeId, 'register');
        const rec = deps.registry.register({
          nodeId: req.nodeId,
          address: req.address,
          slots: req.slots,
          platform: platformFromPb(req.platform),
          metadata: { ...req.metadata },
        });
        if (caller && caller.role !== 'anonymous') owners.set(rec.nodeId, caller.identity);
        deps.log.info({ nodeId: rec.nodeId, slots: rec.slots, address: rec.address, ...(caller && caller.role !== 'anonymous' ? { identity: caller.identity } : {}) }, 'node registered');
        return { sessionId: rec.sessionId, heartbeatIntervalMs: deps.heartbeatIntervalMs, peerToken: deps.peerToken ?? '' };
      }),
      connect,
    },
    send(nodeId, cmd) {
      return write(nodeId, () => toHeadMessage(cmd, nodeId, deps.registry));
    },
    prefetch(nodeId, root, buildId) {
      return write(nodeId, () => ({ prefetch: { root: digestToPb(root), buildId: buildId ?? '' } }));
    },
    closeAll() {
      for (const call of streams.values()) call.end();
      streams.clear();
    },
  };
}
