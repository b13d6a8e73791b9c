/** An ActionCache decorator that reports every lookup and whether it hit (the cache hit ratio). */
import type { ActionCache } from './action-cache.js';

export function createMeteredActionCache(inner: ActionCache, onLookup: (hit: boolean) => void): ActionCache {
  return {
    async get(d) {
      const r = await inner.get(d);
      onLookup(r !== undefined);
      return r;
    },
    put: (d, r) => inner.put(d, r),
  };
}
