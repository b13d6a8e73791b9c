import { Metadata } from '@grpc/grpc-js';
import { loadClientAuth, type ClientAuthOptions } from '../../common/credentials.js';
import { ClusterClient, NodeStatus, type NodeInfo, type BuildInfo } from '../../proto/gen/orion/v1/cluster.js';
import { fromServiceError } from '../../proto/grpc-status.js';
import { Code } from '../../common/errors.js';

const refused = (err: { code?: number }) => err.code === Code.UNAUTHENTICATED || err.code === Code.PERMISSION_DENIED;

const STATUS_NAMES: Record<number, string> = {
  [NodeStatus.NODE_STATUS_ACTIVE]: 'active',
  [NodeStatus.NODE_STATUS_INACTIVE]: 'inactive',
  [NodeStatus.NODE_STATUS_DISCONNECTED]: 'disconnected',
};
const STATUS_VALUES: Record<string, NodeStatus> = {
  active: NodeStatus.NODE_STATUS_ACTIVE,
  inactive: NodeStatus.NODE_STATUS_INACTIVE,
  disconnected: NodeStatus.NODE_STATUS_DISCONNECTED,
};

export function formatNodeTable(nodes: NodeInfo[], now: number): string {
  const rows = [['ID', 'ADDRESS', 'SLOTS', 'RUNNING', 'LOAD', 'STATUS', 'LAST HEARTBEAT']];
  for (const n of nodes) {
    const ago = n.lastHeartbeat ? `${((now - n.lastHeartbeat.getTime()) / 1000).toFixed(1)}s ago` : '-';
    rows.push([n.nodeId, n.address || '-', String(n.slots), String(n.running), n.load.toFixed(2), STATUS_NAMES[n.status] ?? 'unknown', ago]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export function formatBuildTable(builds: BuildInfo[], now: number): string {
  const rows = [['BUILD', 'STARTED', 'QUEUED', 'RUNNING', 'DONE', 'CACHED', 'FAILED', 'STATE']];
  for (const b of builds) {
    const started = b.started ? `${((now - b.started.getTime()) / 1000).toFixed(0)}s ago` : '-';
    rows.push([b.buildId, started, String(b.queued), String(b.running), String(b.done), String(b.cached), String(b.failed), b.inProgress ? 'in progress' : 'finished']);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export async function runStatus(o: { head: string; status?: string; auth?: ClientAuthOptions; builds?: boolean; all?: boolean }): Promise<string> {
  const auth = loadClientAuth(o.auth ?? {});
  const client = new ClusterClient(o.head, auth.credentials, auth.channelOptions);
  try {
    if (o.builds) {
      const res = await new Promise<{ builds: BuildInfo[] }>((resolve, reject) => {
        client.listBuilds({ includeFinished: o.all ?? false }, new Metadata(), { deadline: Date.now() + 10_000 }, (err, r) =>
          err ? reject(fromServiceError(err, refused(err) ? `the head at ${o.head} refused` : `cannot reach the head at ${o.head}`)) : resolve(r),
        );
      });
      if (res.builds.length === 0) return o.all ? 'no builds seen\n' : 'no builds in progress\n';
      return formatBuildTable(res.builds, Date.now());
    }
    const res = await new Promise<{ nodes: NodeInfo[] }>((resolve, reject) => {
      client.listNodes({ status: o.status ? STATUS_VALUES[o.status]! : NodeStatus.NODE_STATUS_UNSPECIFIED }, new Metadata(), { deadline: Date.now() + 10_000 }, (err, r) =>
        err ? reject(fromServiceError(err, refused(err) ? `the head at ${o.head} refused` : `cannot reach the head at ${o.head}`)) : resolve(r),
      );
    });
    if (res.nodes.length === 0) return o.status ? `no ${o.status} nodes\n` : 'no nodes registered\n';
    return formatNodeTable(res.nodes, Date.now());
  } finally {
    client.close();
  }
}
