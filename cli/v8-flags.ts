/**
 * V8 heap settings per command, set before anything else loads (main.ts
 * imports this module first). Measured on the 2-core bench machine:
 * - `orion build` makes much short-lived garbage but holds little: a 2 MB
 *   young generation (V8's default grows to 16 MB) keeps its peak RSS on a
 *   cold Redis build at ~166-189 MB instead of ~208 MB, same build time.
 * - `orion head` holds ~60-70 MB live with a 20,000-action DAG, but V8's
 *   default growth lets garbage reach ~210 MB between full collections
 *   (peak RSS ~343 MB); growing the old generation by at most 20% per
 *   collection keeps it at ~213 MB with the same dispatch rate.
 */
import { setFlagsFromString } from 'node:v8';

const command = process.argv[2];
if (command === 'build') setFlagsFromString('--max-semi-space-size=2');
if (command === 'head') setFlagsFromString('--heap-growing-percent=20');
