/** The head's action cache, consulted after the local one. */
import { Metadata, type ChannelCredentials, type ClientOptions } from '@grpc/grpc-js';
import { actionMetadata } from './action-metadata.js';
import { ActionCacheClient, type ActionResult as PbActionResult } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { Code, statusOf } from '../../common/errors.js';
import type { BlobStore } from '../../cas/blob-store.js';
import type { Digest } from '../../cas/types.js';
import { actionResultFromPb, actionResultToPb, digestToPb } from '../../proto/convert.js';
import { fromServiceError } from '../../proto/grpc-status.js';
import { digestKey } from '../../cas/digest.js';
import { retryTransient } from '../../common/retry.js';
import type { RemoteActionCache } from './build-runner.js';

export interface RemoteActionCacheDeps {
  address: string;
  credentials: ChannelCredentials;
  channelOptions?: Partial<ClientOptions>;
  remote: BlobStore;
  local: BlobStore;
  instanceName?: string;
  buildId?: string;
  /** How long to keep retrying a download when the head is unreachable (it may be restarting; its CAS is durable). */
  retryBudgetMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

export function createRemoteActionCache(deps: RemoteActionCacheDeps): RemoteActionCache {
  const client = new ActionCacheClient(deps.address, deps.credentials, { ...deps.channelOptions });
  // A head with authentication keeps clients out of its action cache: once told so, stop asking.
  let writesRefused = false;
  const fetch = async (d: Digest | undefined) => {
    if (!d || (await deps.local.has(d))) return;
    await retryTransient(`downloading ${digestKey(d)} from the head`, () => deps.local.putStream(d, deps.remote.getStream(d)), {
      budgetMs: deps.retryBudgetMs ?? 120_000,
      sleep: deps.sleep,
    });
  };
  return {
    async get(key, a) {
      try {
        const r = await new Promise<PbActionResult>((resolve, reject) =>
          client.getActionResult(
            { instanceName: deps.instanceName ?? '', actionDigest: digestToPb(key.actionDigest), inlineStdout: false, inlineStderr: false, inlineOutputFiles: [], digestFunction: 0 },
            deps.buildId && a ? actionMetadata(deps.buildId, a) : new Metadata(),
            (err, res) => (err ? reject(fromServiceError(err, 'GetActionResult')) : resolve(res)),
          ),
        );
        return actionResultFromPb(r);
      } catch (err) {
        // A miss; an unreachable head is not fatal here: execution retries until it is back.
        if (statusOf(err) === Code.NOT_FOUND || statusOf(err) === Code.UNAVAILABLE) return undefined;
        throw err;
      }
    },
    async put(key, result) {
      if (writesRefused) return;
      await new Promise<void>((resolve, reject) =>
        client.updateActionResult(
          { instanceName: deps.instanceName ?? '', actionDigest: digestToPb(key.actionDigest), actionResult: actionResultToPb(result), digestFunction: 0 },
          (err) => {
            if (err?.code === Code.PERMISSION_DENIED) writesRefused = true;
            return err ? reject(fromServiceError(err, 'UpdateActionResult')) : resolve();
          },
        ),
      );
    },
    async fetch(result) {
      for (const f of result.outputFiles) await fetch(f.digest);
      await fetch(result.stdoutDigest);
      await fetch(result.stderrDigest);
    },
  };
}
