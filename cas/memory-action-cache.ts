/** An ActionCache held in a Map: for tests and embedded use. */
import type { ActionCache } from './action-cache.js';
import { digestKey, validateDigest } from './digest.js';
import type { ActionResult } from './types.js';

export function createMemoryActionCache(): ActionCache {
  const entries = new Map<string, ActionResult>();
  return {
    async get(actionDigest) {
      return entries.get(digestKey(validateDigest(actionDigest)));
    },
    async put(actionDigest, result) {
      entries.set(digestKey(validateDigest(actionDigest)), result);
    },
  };
}
