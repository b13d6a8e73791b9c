/** The action cache interface: action digest to the ActionResult of running it. */
import type { ActionResult, Digest } from './types.js';

export interface ActionCache {
  /** The cached result, or undefined on a miss. */
  get(actionDigest: Digest): Promise<ActionResult | undefined>;
  put(actionDigest: Digest, result: ActionResult): Promise<void>;
}
