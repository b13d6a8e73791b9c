/**
 * One error type for the whole code base. It carries a gRPC status code (so it
 * survives to the wire unchanged), a stable machine-readable `code` name, and
 * an optional human hint. `wrap` adds context while keeping the status code,
 * so retry decisions can look only at the code.
 */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

const codeNames = new Map<number, string>(Object.entries(Code).map(([k, v]) => [v, k]));
export function codeName(code: number): string {
  return codeNames.get(code) ?? `CODE_${code}`;
}

/** A digest that a request needed but the store does not hold. */
export interface MissingBlob {
  hash: string;
  sizeBytes: number;
}

export interface OrionErrorOptions {
  hint?: string;
  cause?: unknown;
  /** Blobs whose absence caused a FAILED_PRECONDITION (REAPI PreconditionFailure). */
  missing?: MissingBlob[];
  /**
   * A node refused the action because its compiler (or other tool) is not the binary the
   * action's key names (this path, the client's): another node may have it (node/tool-check.ts).
   */
  toolchain?: string;
  /**
   * The failure is the whole build's, not one action's (the head could not be reached at all):
   * a build runner reports it once and stops instead of failing, retrying or falling back per action.
   */
  fatal?: boolean;
}

export class OrionError extends Error {
  readonly code: Code;
  readonly hint?: string;
  readonly missing?: MissingBlob[];
  readonly toolchain?: string;
  readonly fatal?: boolean;

  constructor(code: Code, message: string, opts: OrionErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OrionError';
    this.code = code;
    this.hint = opts.hint;
    this.missing = opts.missing;
    if (opts.toolchain !== undefined) this.toolchain = opts.toolchain;
    if (opts.fatal) this.fatal = true;
  }

  get codeName(): string {
    return codeName(this.code);
  }
}

export const invalidArgument = (msg: string, opts?: OrionErrorOptions) => new OrionError(Code.INVALID_ARGUMENT, msg, opts);
export const notFound = (msg: string, opts?: OrionErrorOptions) => new OrionError(Code.NOT_FOUND, msg, opts);
export const failedPrecondition = (msg: string, opts?: OrionErrorOptions) => new OrionError(Code.FAILED_PRECONDITION, msg, opts);
export const internal = (msg: string, opts?: OrionErrorOptions) => new OrionError(Code.INTERNAL, msg, opts);
export const unavailable = (msg: string, opts?: OrionErrorOptions) => new OrionError(Code.UNAVAILABLE, msg, opts);

/** The message of any thrown value, without the empty "Resolution note: " grpc-js ends some connection errors with. */
export const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err)).replace(/\.? *Resolution note: *$/, '');

/** Whether `err` ends the whole build (OrionErrorOptions.fatal). */
export const isFatal = (err: unknown): boolean => err instanceof OrionError && err.fatal === true;

/** Whether `err` is a system error with errno name `code` (ENOENT, ...). */
export const isErrno = (err: unknown, code: string): boolean => (err as NodeJS.ErrnoException)?.code === code;

/** Status code of any thrown value: OrionError and grpc-js ServiceError keep theirs. */
export function statusOf(err: unknown): Code {
  if (err instanceof OrionError) return err.code;
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'number') {
    const c = (err as { code: number }).code;
    if (c >= 0 && c <= 16) return c as Code;
  }
  if (err && typeof err === 'object' && 'name' in err && (err as Error).name === 'AbortError') return Code.CANCELLED;
  return Code.UNKNOWN;
}

/** Adds context to an error, keeping its status code (Buildbarn's StatusWrap). */
export function wrap(err: unknown, context: string): OrionError {
  const message = err instanceof Error ? err.message : String(err);
  const grpcDetails = err && typeof err === 'object' && 'details' in err ? String((err as { details: unknown }).details) : undefined;
  const inner = grpcDetails && grpcDetails.length > 0 ? grpcDetails : message;
  return new OrionError(statusOf(err), `${context}: ${inner}`, {
    cause: err,
    hint: err instanceof OrionError ? err.hint : undefined,
    missing: err instanceof OrionError ? err.missing : undefined,
    fatal: err instanceof OrionError ? err.fatal : undefined,
  });
}
