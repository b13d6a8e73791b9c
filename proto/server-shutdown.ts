/** Stopping a grpc-js server: in-flight calls get `graceMs` to finish, then the server is forced down. */
import type { Server } from '@grpc/grpc-js';

export function shutdownServer(server: Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
