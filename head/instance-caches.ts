import { createHash } from 'node:crypto';
import path from 'node:path';
import type { ActionCache } from '../cas/action-cache.js';

/**
 * One action cache per REAPI instance name (Bazel's --remote_instance_name), so
 * results never leak between instances. The CAS is shared: it is content-addressed.
 */
export interface InstanceCaches {
  forInstance(instanceName: string): ActionCache;
  /** Closes the caches that hold files open (head shutdown). */
  close(): void;
}

/** A cache `make` returns; `close`, when it has one, is called by InstanceCaches.close. */
export type ClosableActionCache = ActionCache & { close?(): void };

export function createInstanceCaches(make: (subdir: string) => ClosableActionCache, baseDir = ''): InstanceCaches {
  const caches = new Map<string, ClosableActionCache>();
  return {
    forInstance(instanceName) {
      let c = caches.get(instanceName);
      if (!c) {
        const sub = instanceName === '' ? 'default' : `i-${createHash('sha256').update(instanceName).digest('hex').slice(0, 24)}`;
        c = make(path.join(baseDir, sub));
        caches.set(instanceName, c);
      }
      return c;
    },
    close() {
      for (const c of caches.values()) c.close?.();
      caches.clear();
    },
  };
}
