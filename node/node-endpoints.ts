/**
 * A node's own endpoints: Prometheus metrics over HTTP (`--metrics-port`) and
 * grpc.health.v1 (`--health-port`), SERVING while the node is connected to its head.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthService } from '../proto/gen/grpc/health/v1/health.js';
import { Code, OrionError } from '../common/errors.js';
import { listenHttp, type HttpListener } from '../common/http-listen.js';
import { PROMETHEUS_CONTENT_TYPE, type MetricsRegistry } from '../common/metrics.js';
import { createHealthService } from '../head/health-service.js';

export interface NodeEndpointsOptions {
  host: string;
  metricsPort?: number;
  healthPort?: number;
  metrics: MetricsRegistry;
  isServing(): boolean;
}

export interface NodeEndpoints {
  metricsUrl?: string;
  healthAddress?: string;
  close(): Promise<void>;
}

export const NODE_HEALTH_SERVICE = 'orion.v1.Node';

export async function startNodeEndpoints(o: NodeEndpointsOptions): Promise<NodeEndpoints> {
  let http: HttpListener | undefined;
  let grpc: Server | undefined;
  let healthAddress: string | undefined;
  const shownHost = o.host.includes(':') ? `[${o.host}]` : o.host;
  try {
    if (o.metricsPort !== undefined) {
      http = await listenHttp(o.host, o.metricsPort, (req, res) => {
        const url = new URL(req.url ?? '/', 'http://node');
        if (url.pathname === '/metrics') {
          res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE });
          res.end(o.metrics.expose());
        } else if (url.pathname === '/healthz') {
          const ok = o.isServing();
          res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
          res.end(ok ? 'serving\n' : 'not connected to the head\n');
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found: try /metrics or /healthz\n');
        }
      });
    }
    if (o.healthPort !== undefined) {
      const server = new Server();
      server.addService(HealthService, createHealthService([NODE_HEALTH_SERVICE], o.isServing));
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(`${shownHost}:${o.healthPort}`, ServerCredentials.createInsecure(), (err, p) =>
          err ? reject(new OrionError(Code.UNAVAILABLE, `--health-port: cannot listen on ${shownHost}:${o.healthPort}: ${err.message}`)) : resolve(p),
        ),
      );
      grpc = server;
      healthAddress = `${shownHost}:${port}`;
    }
  } catch (err) {
    await http?.close();
    grpc?.forceShutdown();
    throw err;
  }
  return {
    metricsUrl: http?.url,
    healthAddress,
    async close() {
      await http?.close();
      grpc?.forceShutdown();
    },
  };
}
