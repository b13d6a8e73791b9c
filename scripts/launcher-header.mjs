// Makes dist/orion.mjs start through /bin/sh (a polyglot first line), so the `orion` command can
// keep NODE_EXTRA_CA_CERTS from Node's start-up: Node parses that file before running any code
// (~50 ms for Debian's CA bundle, on every `orion build`), and Orion needs it only for TLS to a
// head, where common/extra-ca-certs.ts hands it back. `node dist/orion.mjs` still works: to JavaScript
// the second line is a string and a comment.
// It also gives `orion head` a larger libuv thread pool (16 threads unless UV_THREADPOOL_SIZE is
// set): every uploaded blob is written through that pool (open, write, close, rename), and a call
// that waits on the disk holds a thread; it was sized when each upload also ended in an fdatasync
// (now the file system is flushed as a whole every few seconds: cas/sync-checkpoint.ts). Node
// reads the variable when the pool starts, which its module loader does before any of Orion runs,
// so only the environment can set it.
// And a 4 MB young generation (V8's grows to 16 MB): with a 20,000-action DAG dispatched at
// ~2,200 actions/s the head's peak RSS was 252 MiB with V8's default, 220 MiB with this, at the
// same rate. V8 sizes it when the heap is made, so it is a flag of Node's command line.
import { readFileSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
const HEADER = [
  '#!/bin/sh',
  `':' //; if [ -n "\${NODE_EXTRA_CA_CERTS:-}" ]; then ORION_NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; export ORION_NODE_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; fi; if [ "\${1:-}" = head ]; then if [ -z "\${UV_THREADPOOL_SIZE:-}" ]; then UV_THREADPOOL_SIZE=16; export UV_THREADPOOL_SIZE; fi; exec node --max-semi-space-size=4 "$0" "$@"; fi; exec node "$0" "$@"`,
];
const lines = readFileSync(file, 'utf8').split('\n');
if (!lines[0].startsWith('#!')) throw new Error(`${file}: expected a #! first line, found ${JSON.stringify(lines[0])}`);
writeFileSync(file, [...HEADER, ...lines.slice(1)].join('\n'));
