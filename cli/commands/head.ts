import { createLogger } from '../../common/logger.js';
import { startHead } from '../../head/head.js';
import { daemonSignal } from '../signals.js';

export interface HeadCommandOptions {
  listen: string;
  dataDir: string;
  heartbeatTimeoutMs: number;
  logLevel: string;
}

export async function runHead(o: HeadCommandOptions): Promise<void> {
  const log = createLogger({ level: o.logLevel, name: 'orion-head' });
  const head = await startHead({ listen: o.listen, dataDir: o.dataDir, heartbeatTimeoutMs: o.heartbeatTimeoutMs, log });
  // Tests and scripts read this line to learn the port when --port 0 was given.
  process.stdout.write(`orion head listening on ${head.address}\n`);
  const signal = daemonSignal(log);
  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  await head.stop();
  log.info('head stopped');
  log.flush?.();
}
