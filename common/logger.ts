import { pino, destination, type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  name?: string;
  /** Write human-readable lines (default: when stderr is a terminal). */
  pretty?: boolean;
}

/** One pino logger per process, writing to stderr; children per build / action / node. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? process.env.ORION_LOG_LEVEL ?? 'info';
  const pretty = opts.pretty ?? Boolean(process.stderr.isTTY);
  if (pretty) {
    return pino({
      level,
      name: opts.name,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  return pino({ level, name: opts.name }, destination({ fd: 2, sync: false }));
}

/** A logger that drops everything (tests, embedded mode with --quiet). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
