/** Turning OrionErrors into gRPC errors (with google.rpc.Status details) and back. */
import { Metadata, type ServiceError, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream } from '@grpc/grpc-js';
import { Code, OrionError, statusOf } from '../common/errors.js';
import { Status } from './gen/google/rpc/status.js';
import { missingFromStatus, statusToPb } from './convert.js';

const DETAILS_KEY = 'grpc-status-details-bin';

export function toServiceError(err: unknown): Partial<ServiceError> {
  const code = statusOf(err);
  const message = err instanceof Error ? err.message : String(err);
  const metadata = new Metadata();
  const missing = err instanceof OrionError ? err.missing : undefined;
  metadata.set(DETAILS_KEY, Buffer.from(Status.encode(statusToPb(code, message, missing)).finish()));
  return { code: code === Code.OK ? Code.UNKNOWN : code, details: message, metadata };
}

/** Reads a gRPC client error back into an OrionError, keeping PreconditionFailure details. */
export function fromServiceError(err: unknown, context: string): OrionError {
  if (err instanceof OrionError) return err;
  const se = err as Partial<ServiceError>;
  const code = statusOf(err);
  let missing;
  const bin = se.metadata?.get(DETAILS_KEY)?.[0];
  if (bin && Buffer.isBuffer(bin)) {
    try {
      missing = missingFromStatus(Status.decode(bin));
    } catch {
      missing = undefined;
    }
  }
  return new OrionError(code, `${context}: ${se.details || se.message || String(err)}`, { missing, cause: err });
}

/** Wraps an async unary handler so every failure becomes a well-formed gRPC status. */
export function unary<Req, Res>(fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err) => callback(toServiceError(err)),
    );
  };
}

/** Wraps an async server-streaming handler; it writes through `call` and resolves when done. */
export function serverStream<Req, Res>(fn: (req: Req, call: ServerWritableStream<Req, Res>) => Promise<void>) {
  return (call: ServerWritableStream<Req, Res>) => {
    fn(call.request, call).then(
      () => call.end(),
      (err) => call.emit('error', toServiceError(err)),
    );
  };
}
