import type { ServerWritableStream } from '@grpc/grpc-js';
import { HealthCheckResponse_ServingStatus, type HealthCheckRequest, type HealthCheckResponse, type HealthServer } from '../proto/gen/grpc/health/v1/health.js';
import { Code, OrionError } from '../common/errors.js';
import { unary } from '../proto/grpc-status.js';

/** grpc.health.v1: "" is the whole server; each registered service name answers too. */
export function createHealthService(serviceNames: string[], isServing: () => boolean = () => true): HealthServer {
  const known = new Set(['', ...serviceNames]);
  const status = (service: string) => {
    if (!known.has(service)) throw new OrionError(Code.NOT_FOUND, `unknown service ${JSON.stringify(service)}`);
    return isServing() ? HealthCheckResponse_ServingStatus.SERVING : HealthCheckResponse_ServingStatus.NOT_SERVING;
  };
  return {
    check: unary(async (req: HealthCheckRequest) => ({ status: status(req.service) })),
    watch(call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) {
      const s = known.has(call.request.service) ? status(call.request.service) : HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN;
      call.write({ status: s });
      // The stream stays open until the client cancels; the status only changes at shutdown.
      call.on('cancelled', () => call.end());
    },
  };
}
