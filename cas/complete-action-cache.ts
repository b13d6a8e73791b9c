/**
 * An ActionCache decorator that serves an entry only when every blob it
 * references is in the CAS: output files, stdout/stderr, output directory trees
 * and the files inside them. A client handed an entry whose outputs were evicted
 * would fail to download them; a miss makes it re-run the action instead.
 */
import { statusOf, Code } from '../common/errors.js';
import type { ActionCache } from './action-cache.js';
import type { BlobStore } from './blob-store.js';
import { decodeTree } from './directory.js';
import type { ActionResult, Digest } from './types.js';

/** The blobs `result` references, or undefined when an output tree is itself missing or unreadable. */
async function referencedBlobs(result: ActionResult, blobs: BlobStore): Promise<Digest[] | undefined> {
  const refs: Digest[] = result.outputFiles.map((f) => f.digest);
  if (result.stdoutDigest) refs.push(result.stdoutDigest);
  if (result.stderrDigest) refs.push(result.stderrDigest);
  for (const dir of result.outputDirectories) {
    let tree;
    try {
      tree = decodeTree(await blobs.get(dir.treeDigest));
    } catch (err) {
      const code = statusOf(err);
      if (code === Code.NOT_FOUND || code === Code.INVALID_ARGUMENT) return undefined;
      throw err;
    }
    for (const d of [tree.root, ...tree.children]) for (const f of d.files) refs.push(f.digest);
  }
  return refs;
}

export function createCompletenessCheckingActionCache(inner: ActionCache, blobs: BlobStore): ActionCache {
  return {
    async get(actionDigest) {
      const result = await inner.get(actionDigest);
      if (!result) return undefined;
      const refs = await referencedBlobs(result, blobs);
      if (!refs || (await blobs.findMissing(refs)).length > 0) return undefined;
      return result;
    },
    put: (actionDigest, result) => inner.put(actionDigest, result),
  };
}
