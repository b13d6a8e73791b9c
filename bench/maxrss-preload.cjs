// Loaded with NODE_OPTIONS=--require by the benchmark's memory measurement: when the process exits,
// appends its own peak RSS (getrusage RUSAGE_SELF, so the Node process alone, not its compilers)
// to $BENCH_MAXRSS_FILE as one JSON line.
'use strict';
const fs = require('node:fs');
process.on('exit', () => {
  const file = process.env.BENCH_MAXRSS_FILE;
  if (!file) return;
  try {
    fs.appendFileSync(file, `${JSON.stringify({ pid: process.pid, argv: process.argv.slice(2, 4), maxRssKb: process.resourceUsage().maxRSS })}\n`);
  } catch {
    /* never fail the measured process */
  }
});
