import { NodeStatus as PbNodeStatus, type BuildInfo, type ClusterServer, type NodeInfo } from '../proto/gen/orion/v1/cluster.js';
import { Code, OrionError } from '../common/errors.js';
import { platformToPb } from '../proto/convert.js';
import { unary } from '../proto/grpc-status.js';
import type { NodeRecord, NodeRegistry, NodeStatus } from './node-registry.js';
import type { BuildTracker, BuildView } from './build-tracker.js';

export function buildInfo(b: BuildView): BuildInfo {
  const c = b.counts;
  return {
    buildId: b.id,
    started: new Date(b.startedAt),
    lastActivity: new Date(b.lastActivity),
    queued: c.queued,
    running: c.running,
    done: c.done + c.cached,
    failed: c.failed,
    cached: c.cached,
    inProgress: b.inProgress,
  };
}

const TO_PB: Record<NodeStatus, PbNodeStatus> = {
  active: PbNodeStatus.NODE_STATUS_ACTIVE,
  inactive: PbNodeStatus.NODE_STATUS_INACTIVE,
  disconnected: PbNodeStatus.NODE_STATUS_DISCONNECTED,
};

function fromPbStatus(s: PbNodeStatus): NodeStatus | undefined {
  switch (s) {
    case PbNodeStatus.NODE_STATUS_UNSPECIFIED:
      return undefined;
    case PbNodeStatus.NODE_STATUS_ACTIVE:
      return 'active';
    case PbNodeStatus.NODE_STATUS_INACTIVE:
      return 'inactive';
    case PbNodeStatus.NODE_STATUS_DISCONNECTED:
      return 'disconnected';
    default:
      throw new OrionError(Code.INVALID_ARGUMENT, `unknown node status ${s}`);
  }
}

export function nodeInfo(n: NodeRecord): NodeInfo {
  return {
    nodeId: n.nodeId,
    address: n.address,
    slots: n.slots,
    running: n.running.size,
    status: TO_PB[n.status],
    lastHeartbeat: new Date(n.lastHeartbeat),
    registeredAt: new Date(n.registeredAt),
    platform: platformToPb(n.platform),
    metadata: n.quarantined ? { ...n.metadata, 'orion.quarantined': n.quarantined } : n.metadata,
    load: n.load,
  };
}

export function createClusterService(registry: NodeRegistry, builds?: BuildTracker): ClusterServer {
  return {
    listNodes: unary(async (req) => ({ nodes: registry.list(fromPbStatus(req.status)).map(nodeInfo) })),
    getNode: unary(async (req) => {
      const n = registry.get(req.nodeId);
      if (!n) throw new OrionError(Code.NOT_FOUND, `no node ${JSON.stringify(req.nodeId)} is registered`);
      return nodeInfo(n);
    }),
    listBuilds: unary(async (req) => ({ builds: (builds?.list(req.includeFinished) ?? []).map(buildInfo) })),
  };
}
