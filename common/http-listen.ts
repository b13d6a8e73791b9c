/** Starts a node:http server on host:port (0 picks a free port) and stops it with its open connections. */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Code, OrionError } from './errors.js';

export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface HttpListener {
  port: number;
  /** http://host:port */
  url: string;
  close(): Promise<void>;
}

export async function listenHttp(host: string, port: number, handler: HttpHandler): Promise<HttpListener> {
  const server = http.createServer(handler);
  // Long-lived responses (server-sent events) must not be cut by the default timeouts.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new OrionError(Code.UNAVAILABLE, `cannot listen on ${host}:${port} (HTTP): ${err.message}`)));
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    port: bound,
    url: `http://${shownHost}:${bound}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Splits "host:port" / "[v6]:port" for listen(). */
export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(i + 1)) };
}
