/**
 * `orion build` makes much short-lived garbage but holds little: a 2 MB young
 * generation (V8's default grows to 16 MB) keeps its peak RSS on a cold Redis
 * build at ~166 MB instead of ~208 MB, with no measurable change in build
 * time. Imported first by main.ts, so it is set before anything else loads.
 */
import { setFlagsFromString } from 'node:v8';

if (process.argv[2] === 'build') setFlagsFromString('--max-semi-space-size=2');
