/**
 * The head's HTTP side: a JSON API (nodes, builds, one build's actions), server-sent
 * events for live updates, Prometheus metrics, and the web dashboard that uses them.
 * Every request passes `authorize` first (default: allow), so the same credentials
 * as the gRPC API can guard it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../common/logger.js';
import { PROMETHEUS_CONTENT_TYPE, type MetricsRegistry } from '../common/metrics.js';
import type { HttpHandler } from '../common/http-listen.js';
import type { BuildEvent, BuildTracker } from './build-tracker.js';
import type { NodeRecord, NodeRegistry } from './node-registry.js';
import { DASHBOARD_HTML } from './dashboard/page.js';

export type Authorize = (req: IncomingMessage) => boolean | Promise<boolean>;

export interface HttpApiDeps {
  registry: NodeRegistry;
  builds: BuildTracker;
  metrics: MetricsRegistry;
  log: Logger;
  authorize?: Authorize;
  /** How often connected dashboards get the node list when it changed (ms). */
  nodesEveryMs?: number;
  /** Comment lines keep idle event streams open through proxies (ms). */
  keepAliveMs?: number;
}

export interface HttpApi {
  handler: HttpHandler;
  /** Ends every open event stream and stops the timers. */
  close(): void;
}

export interface NodeView {
  id: string;
  address: string;
  status: string;
  slots: number;
  running: number;
  load: number;
  lastHeartbeat: number;
  registeredAt: number;
}

export function nodeView(n: NodeRecord): NodeView {
  return { id: n.nodeId, address: n.address, status: n.status, slots: n.slots, running: n.running.size, load: n.load, lastHeartbeat: n.lastHeartbeat, registeredAt: n.registeredAt };
}

function sendJson(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function createHttpApi(deps: HttpApiDeps): HttpApi {
  const authorize = deps.authorize ?? (() => true);
  const streams = new Set<ServerResponse>();
  const log = deps.log.child({ component: 'http' });

  const writeEvent = (res: ServerResponse, event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const broadcast = (event: string, data: unknown) => {
    for (const res of streams) writeEvent(res, event, data);
  };

  const unsubscribe = deps.builds.subscribe((ev: BuildEvent) => {
    if (streams.size === 0) return;
    if (ev.type === 'action') broadcast('action', { buildId: ev.buildId, action: ev.action });
    else broadcast('build', ev.build);
  });
  let lastNodes = '';
  const nodesTimer = setInterval(() => {
    if (streams.size === 0) return;
    const nodes = deps.registry.list().map(nodeView);
    // Heartbeat times change every beat; push when what a person sees changes.
    const shape = JSON.stringify(nodes.map((n) => [n.id, n.status, n.running, n.slots, n.load.toFixed(1)]));
    if (shape === lastNodes) return;
    lastNodes = shape;
    broadcast('nodes', nodes);
  }, deps.nodesEveryMs ?? 500);
  nodesTimer.unref();
  const keepAlive = setInterval(() => {
    for (const res of streams) res.write(': keep-alive\n\n');
  }, deps.keepAliveMs ?? 15_000);
  keepAlive.unref();

  function events(req: IncomingMessage, res: ServerResponse) {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write('retry: 1000\n\n');
    writeEvent(res, 'nodes', deps.registry.list().map(nodeView));
    writeEvent(res, 'builds', deps.builds.list(true));
    streams.add(res);
    req.on('close', () => streams.delete(res));
  }

  async function route(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', 'http://head');
    if (!(await authorize(req))) return sendJson(res, 401, { error: 'unauthenticated: this head requires credentials' });
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return sendJson(res, 405, { error: `method ${req.method} not allowed` });
    }
    const p = url.pathname;
    if (p === '/' || p === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(DASHBOARD_HTML);
    }
    if (p === '/metrics') {
      res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE });
      return res.end(deps.metrics.expose());
    }
    if (p === '/api/nodes') return sendJson(res, 200, { nodes: deps.registry.list().map(nodeView) });
    if (p === '/api/builds') return sendJson(res, 200, { builds: deps.builds.list(url.searchParams.get('inProgress') !== '1') });
    const m = /^\/api\/builds\/([^/]+)$/.exec(p);
    if (m) {
      const b = deps.builds.get(decodeURIComponent(m[1]!));
      return b ? sendJson(res, 200, b) : sendJson(res, 404, { error: `no build ${JSON.stringify(decodeURIComponent(m[1]!))} is known to this head` });
    }
    if (p === '/api/events') return events(req, res);
    return sendJson(res, 404, { error: `no such page: ${p}` });
  }

  return {
    handler(req, res) {
      route(req, res).catch((err) => {
        log.warn({ err: (err as Error).message, url: req.url }, 'HTTP request failed');
        if (!res.headersSent) sendJson(res, 500, { error: (err as Error).message });
        else res.end();
      });
    },
    close() {
      unsubscribe();
      clearInterval(nodesTimer);
      clearInterval(keepAlive);
      for (const res of streams) res.end();
      streams.clear();
    },
  };
}
