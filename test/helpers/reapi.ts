import { credentials, type ServiceError } from '@grpc/grpc-js';
import {
  Action,
  Command,
  ExecuteOperationMetadata,
  ExecuteResponse,
  ExecutionClient,
  ExecutionStage_Value,
} from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import type { Operation } from '../../proto/gen/google/longrunning/operations.js';
import { digestOf } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import { createGrpcBlobStore, type RemoteBlobStore } from '../../proto/grpc-blob-store.js';

export function casClient(address: string, instanceName = ''): RemoteBlobStore {
  return createGrpcBlobStore({ address, credentials: credentials.createInsecure(), instanceName });
}

export async function uploadBlob(cas: RemoteBlobStore, data: Buffer): Promise<Digest> {
  const d = digestOf(data);
  await cas.put(d, data);
  return d;
}

export async function makeAction(cas: RemoteBlobStore, opts: { argv: string[]; outputs: string[]; inputRoot: Digest; env?: Record<string, string>; timeoutSeconds?: number; upload?: boolean }) {
  const command = Buffer.from(
    Command.encode(
      Command.fromPartial({
        arguments: opts.argv,
        environmentVariables: Object.entries(opts.env ?? { PATH: '/usr/bin:/bin' }).map(([name, value]) => ({ name, value })),
        outputPaths: opts.outputs,
        workingDirectory: '',
      }),
    ).finish(),
  );
  const commandDigest = digestOf(command);
  const action = Buffer.from(
    Action.encode(Action.fromPartial({ commandDigest, inputRootDigest: opts.inputRoot, timeout: opts.timeoutSeconds ? { seconds: opts.timeoutSeconds, nanos: 0 } : undefined })).finish(),
  );
  const actionDigest = digestOf(action);
  if (opts.upload !== false) {
    await cas.put(commandDigest, command);
    await cas.put(actionDigest, action);
  }
  return { actionDigest, commandDigest };
}

export interface ExecuteOutcome {
  operations: Operation[];
  stages: ExecutionStage_Value[];
  response?: ExecuteResponse;
  error?: ServiceError;
}

export async function execute(address: string, actionDigest: Digest, opts: { skipCacheLookup?: boolean; instanceName?: string } = {}): Promise<ExecuteOutcome> {
  const client = new ExecutionClient(address, credentials.createInsecure());
  const outcome: ExecuteOutcome = { operations: [], stages: [] };
  try {
    await new Promise<void>((resolve) => {
      const stream = client.execute({ instanceName: opts.instanceName ?? '', skipCacheLookup: opts.skipCacheLookup ?? false, actionDigest, digestFunction: 0, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [] });
      stream.on('data', (op: Operation) => {
        outcome.operations.push(op);
        if (op.metadata) outcome.stages.push(ExecuteOperationMetadata.decode(op.metadata.value).stage);
        if (op.done && op.response) outcome.response = ExecuteResponse.decode(op.response.value);
      });
      stream.on('error', (err: ServiceError) => {
        outcome.error = err;
        resolve();
      });
      stream.on('end', () => resolve());
    });
  } finally {
    client.close();
  }
  return outcome;
}
