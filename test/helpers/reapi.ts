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
import type { BlobStore } from '../../cas/blob-store.js';
import { buildTreeFromEntries } from '../../cas/merkle.js';
import type { Digest } from '../../cas/types.js';
import { createGrpcBlobStore, type RemoteBlobStore } from '../../proto/grpc-blob-store.js';

export function casClient(address: string, instanceName = ''): RemoteBlobStore {
  return createGrpcBlobStore({ address, credentials: credentials.createInsecure(), instanceName });
}

export async function uploadBlob(cas: BlobStore, data: Buffer): Promise<Digest> {
  const d = digestOf(data);
  await cas.put(d, data);
  return d;
}

/** Uploads `files` (path → content) and the directories of their Merkle tree; returns the root's digest. */
export async function uploadTree(cas: BlobStore, files: Record<string, string>): Promise<Digest> {
  for (const content of Object.values(files)) await cas.put(digestOf(Buffer.from(content)), Buffer.from(content));
  const tree = buildTreeFromEntries(Object.entries(files).map(([p, content]) => ({ path: p, digest: digestOf(Buffer.from(content)), isExecutable: false })));
  for (const bytes of tree.directories.values()) await cas.put(digestOf(bytes), bytes);
  return tree.rootDigest;
}

/** Uploads a Command running `argv` with PATH=/usr/bin:/bin and declaring `outputs`; returns its digest. */
export async function uploadCommand(cas: BlobStore, argv: string[], outputs: string[]): Promise<Digest> {
  const bytes = Buffer.from(Command.encode(Command.fromPartial({ arguments: argv, environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }], outputPaths: outputs, workingDirectory: '' })).finish());
  return uploadBlob(cas, bytes);
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
