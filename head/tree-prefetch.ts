/**
 * Builds.Prefetch: a client about to submit a build says which source tree it
 * starts from, and the head asks enough active nodes for the client's -j to
 * fetch that tree now. The
 * client's dry run and first steps take a second or more; without this, each
 * node starts fetching the tree (on Redis: 1,539 files, 19 MB) only when its
 * first action arrives, and the build's first compiles wait for it.
 */
import type { BlobStore } from '../cas/blob-store.js';
import { digestKey } from '../cas/digest.js';
import type { Digest } from '../cas/types.js';
import { Code, OrionError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { NodeRecord, NodeRegistry } from './node-registry.js';

export interface TreePrefetch {
  /**
   * Asks active nodes to fetch `root`: enough of them for `parallelism` slots (the client's -j),
   * those with the most free slots first, or all when it is 0. Resolves to how many were asked.
   */
  prefetch(root: Digest, buildId?: string, parallelism?: number): Promise<number>;
}

export interface TreePrefetchDeps {
  cas: BlobStore;
  registry: Pick<NodeRegistry, 'list'>;
  /** Sends the request down a node's stream; false when the node has none open. */
  send(nodeId: string, root: Digest, buildId?: string): boolean;
  log: Logger;
}

export function createTreePrefetch(deps: TreePrefetchDeps): TreePrefetch {
  return {
    async prefetch(root, buildId, parallelism = 0) {
      // The root's Directory only: the nodes read the rest of the tree (and report what is missing
      // in their logs); the build itself checks the whole tree when it is submitted.
      if (!(await deps.cas.has(root))) {
        throw new OrionError(Code.FAILED_PRECONDITION, `source_root ${digestKey(root)} is not in the CAS`, {
          hint: 'upload the tree (its Directory messages and files) before asking the head to prefetch it',
          missing: [root],
        });
      }
      // A build of N actions at once uses at most that many slots: a large fleet does not pull a
      // large tree onto every node for a small build.
      const free = (n: NodeRecord) => n.slots - n.running.size;
      const nodes = deps.registry.list('active').filter((n) => n.connected).sort((a, b) => free(b) - free(a) || b.slots - a.slots);
      let asked = 0;
      let slots = 0;
      for (const n of nodes) {
        if (parallelism > 0 && slots >= parallelism) break;
        if (!deps.send(n.nodeId, root, buildId)) continue;
        asked++;
        slots += n.slots;
      }
      deps.log.debug({ buildId, root: digestKey(root), nodes: asked }, 'asked nodes to prefetch a tree');
      return asked;
    },
  };
}
