// Makes dist/orion.mjs start through /bin/sh (a polyglot first line), so the `orion` command can
// keep NODE_EXTRA_CA_CERTS from Node's start-up: Node parses that file before running any code
// (~50 ms for Debian's CA bundle, on every `orion build`), and Orion needs it only for TLS to a
// head, where common/extra-ca-certs.ts hands it back. `node dist/orion.mjs` still works: to JavaScript
// the second line is a string and a comment.
import { readFileSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
const HEADER = [
  '#!/bin/sh',
  `':' //; if [ -n "\${NODE_EXTRA_CA_CERTS:-}" ]; then ORION_NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; export ORION_NODE_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; fi; exec node "$0" "$@"`,
];
const lines = readFileSync(file, 'utf8').split('\n');
if (!lines[0].startsWith('#!')) throw new Error(`${file}: expected a #! first line, found ${JSON.stringify(lines[0])}`);
writeFileSync(file, [...HEADER, ...lines.slice(1)].join('\n'));
