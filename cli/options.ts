/** Pure parsers for command-line values; each throws a UsageError naming the flag. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** "10s", "500ms", "2m", "1h" or a bare number of seconds. */
export function parseDuration(value: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw new UsageError(`${flag}: invalid duration ${JSON.stringify(value)} (examples: 500ms, 10s, 2m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n * 3_600_000;
  if (ms <= 0) throw new UsageError(`${flag}: duration must be positive, got ${JSON.stringify(value)}`);
  return Math.round(ms);
}

/** A whole number from `min` to `max`; `what` names the expected kind in the error. */
function parseWhole(value: string, flag: string, min: number, max: number, what: string): number {
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${flag}: expected ${what}, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`${flag}: must be between ${min} and ${max}, got ${n}`);
  return n;
}

export const parsePositiveInt = (value: string, flag: string, max = 1_000_000): number => parseWhole(value, flag, 1, max, 'a positive integer');

export const parseNonNegativeInt = (value: string, flag: string, max = 1_000_000): number => parseWhole(value, flag, 0, max, 'a whole number (0 or more)');

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, kib: 2 ** 10, m: 1e6, mb: 1e6, mib: 2 ** 20, g: 1e9, gb: 1e9, gib: 2 ** 30, t: 1e12, tb: 1e12, tib: 2 ** 40 };

/** A size in bytes: "512MiB", "2GiB", "100MB", "4096" (bytes), at least `min`. */
export function parseSize(value: string, flag: string, min = 1): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new UsageError(`${flag}: invalid size ${JSON.stringify(value)} (examples: 512MiB, 2GiB, 100MB)`);
  const n = Math.floor(Number(m[1]) * unit);
  if (n < min) throw new UsageError(`${flag}: must be at least ${min} bytes, got ${JSON.stringify(value)}`);
  return n;
}

export function parsePort(value: string, flag: string): number {
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${flag}: expected a port number, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (n > 65535) throw new UsageError(`${flag}: port must be 0..65535, got ${n}`);
  return n;
}

/** "host:port" (IPv6 as "[::1]:port"). */
export function parseHostPort(value: string, flag: string): string {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value.trim());
  if (!m || Number(m[2]) > 65535 || Number(m[2]) === 0) throw new UsageError(`${flag}: expected HOST:PORT (for example 127.0.0.1:50050), got ${JSON.stringify(value)}`);
  return value.trim();
}
