/**
 * Bounds on what one request may make the head do. Each is checked before the
 * request's payload is read whole, and a violation is a clear INVALID_ARGUMENT
 * (the request can never succeed as sent, so clients must not retry it).
 */
export interface HeadLimits {
  /** Largest blob the CAS accepts (ByteStream Write declaring more is refused before any data is read). */
  maxBlobBytes: number;
  /** Largest gRPC message in either direction (grpc-js refuses a bigger one from its length prefix). */
  maxMessageBytes: number;
  /**
   * Longest action timeout. An Action asking for more is rejected (REAPI: the server
   * MUST reject a timeout above its maximum); an Action without one gets this one.
   */
  maxActionTimeoutMs: number;
  /** HTTP/2 streams one connection may have open at once (grpc.max_concurrent_streams). */
  maxConcurrentStreams: number;
  /** Directories plus files plus symlinks (distinct directories counted once) in one input tree. */
  maxInputTreeEntries: number;
  /** Deepest directory nesting of an input tree. */
  maxInputTreeDepth: number;
  /** Actions in one DAG submitted to the Builds service. */
  maxDagActions: number;
}

export const DEFAULT_HEAD_LIMITS: HeadLimits = {
  maxBlobBytes: 1024 ** 3,
  maxMessageBytes: 16 * 1024 * 1024,
  maxActionTimeoutMs: 3_600_000,
  maxConcurrentStreams: 1000,
  maxInputTreeEntries: 5_000_000,
  maxInputTreeDepth: 512,
  maxDagActions: 200_000,
};

/** "1GiB", "512MiB", "64k", "1000" (bytes); binary units whatever the spelling. */
export function parseByteSize(value: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$/i.exec(value.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? 'b').toLowerCase()[0]!;
  const mult = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit as 'b' | 'k' | 'm' | 'g' | 't'];
  const n = Math.floor(Number(m[1]) * mult);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}
