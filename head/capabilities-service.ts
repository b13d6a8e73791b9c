import {
  DigestFunction_Value,
  SymlinkAbsolutePathStrategy_Value,
  Compressor_Value,
  type CapabilitiesServer,
} from '../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { unary } from '../proto/grpc-status.js';

export function createCapabilitiesService(opts: { maxBatchTotalBytes: number; execEnabled: boolean; updateEnabled: boolean }): CapabilitiesServer {
  return {
    getCapabilities: unary(async () => ({
      cacheCapabilities: {
        digestFunctions: [DigestFunction_Value.SHA256],
        actionCacheUpdateCapabilities: { updateEnabled: opts.updateEnabled },
        cachePriorityCapabilities: undefined,
        maxBatchTotalSizeBytes: opts.maxBatchTotalBytes,
        symlinkAbsolutePathStrategy: SymlinkAbsolutePathStrategy_Value.DISALLOWED,
        supportedCompressors: [Compressor_Value.IDENTITY],
        supportedBatchUpdateCompressors: [Compressor_Value.IDENTITY],
      },
      executionCapabilities: {
        digestFunction: DigestFunction_Value.SHA256,
        execEnabled: opts.execEnabled,
        executionPriorityCapabilities: undefined,
        supportedNodeProperties: [],
        digestFunctions: [DigestFunction_Value.SHA256],
      },
      deprecatedApiVersion: undefined,
      lowApiVersion: { major: 2, minor: 0, patch: 0, prerelease: '' },
      highApiVersion: { major: 2, minor: 3, patch: 0, prerelease: '' },
    })),
  };
}
