import type { ActionCacheServer } from '../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { Code, OrionError } from '../common/errors.js';
import type { BlobStore } from '../cas/blob-store.js';
import { actionResultFromPb, actionResultToPb, digestFromPb } from '../proto/convert.js';
import { unary } from '../proto/grpc-status.js';
import type { InstanceCaches } from './instance-caches.js';
import type { BuildTracker } from './build-tracker.js';
import { requestInfo } from './request-info.js';

export interface ActionCacheServiceOptions {
  caches: InstanceCaches;
  cas: BlobStore;
  /** Whether clients may write the action cache (REAPI's update_enabled). */
  allowUpdates: boolean;
  /** Records cache hits of clients that named their build (metadata x-orion-build-id). */
  builds?: BuildTracker;
}

export function createActionCacheService(opts: ActionCacheServiceOptions): ActionCacheServer {
  return {
    getActionResult: unary(async (req, call) => {
      const digest = digestFromPb(req.actionDigest, 'action_digest');
      const result = await opts.caches.forInstance(req.instanceName).get(digest);
      const info = opts.builds && requestInfo(call.metadata);
      if (info) opts.builds!.lookup(info, digest, result !== undefined);
      if (!result) throw new OrionError(Code.NOT_FOUND, `no cached result for action ${digest.hash}/${digest.sizeBytes}`);
      const pb = actionResultToPb(result);
      if (req.inlineStdout && result.stdoutDigest && result.stdoutDigest.sizeBytes <= 1024 * 1024 && !result.stdoutRaw) {
        pb.stdoutRaw = await opts.cas.get(result.stdoutDigest);
      }
      if (req.inlineStderr && result.stderrDigest && result.stderrDigest.sizeBytes <= 1024 * 1024 && !result.stderrRaw) {
        pb.stderrRaw = await opts.cas.get(result.stderrDigest);
      }
      return pb;
    }),
    updateActionResult: unary(async (req) => {
      if (!opts.allowUpdates) throw new OrionError(Code.PERMISSION_DENIED, 'this head does not accept action-cache writes from clients');
      const digest = digestFromPb(req.actionDigest, 'action_digest');
      if (!req.actionResult) throw new OrionError(Code.INVALID_ARGUMENT, 'action_result is missing');
      const result = actionResultFromPb(req.actionResult);
      const referenced = [
        ...result.outputFiles.map((f) => f.digest),
        ...result.outputDirectories.map((d) => d.treeDigest),
        ...(result.stdoutDigest ? [result.stdoutDigest] : []),
        ...(result.stderrDigest ? [result.stderrDigest] : []),
      ];
      const missing = await opts.cas.findMissing(referenced);
      if (missing.length > 0) {
        throw new OrionError(Code.FAILED_PRECONDITION, `action result references ${missing.length} blob(s) not in the CAS`, { missing });
      }
      await opts.caches.forInstance(req.instanceName).put(digest, result);
      return actionResultToPb(result);
    }),
  };
}
