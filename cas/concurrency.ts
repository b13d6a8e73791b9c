/** Runs at most `max` async operations at a time; the rest wait in FIFO order. */
export type Limiter = <T>(fn: () => Promise<T>) => Promise<T>;

export function createLimiter(max: number): Limiter {
  let active = 0;
  // A FIFO with a moving head: Array#shift copies a long array on every call, which made
  // queueing one call per item (a DAG build's 100,000 actions, a tree's files) quadratic.
  let waiting: (() => void)[] = [];
  let head = 0;
  // A finishing operation hands its slot straight to the next waiter, so `active` never exceeds `max`.
  const release = () => {
    if (head === waiting.length) {
      active--;
      return;
    }
    const next = waiting[head++]!;
    if (head === waiting.length) {
      waiting = [];
      head = 0;
    } else if (head >= 1024 && head * 2 >= waiting.length) {
      waiting = waiting.slice(head);
      head = 0;
    }
    next();
  };
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active < max) active++;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await fn();
    } finally {
      release();
    }
  };
}

/**
 * Like Promise.all, but waits for every promise to settle before rejecting with
 * the first failure, so no work is still running when the caller cleans up.
 */
export async function settleAll<T>(ps: Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(ps);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
