/**
 * What a rebuild remembers to key its actions quickly: where #includes resolved
 * (within a build), the input roots built before (across builds), and the
 * previous keys --explain compares against.
 */
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildTreeFromEntries, type TreeFileEntry } from '../../cas/merkle.js';
import { digestOf } from '../../cas/digest.js';
import { Code } from '../../common/errors.js';
import { createIncludeScanner, loadDirectiveStore } from '../../cli/build/include-scanner.js';
import { inputRootOf, loadTreeMemo, treeFingerprint } from '../../cli/build/tree-memo.js';
import { loadKeyHistory } from '../../cli/build/key-history.js';
import type { ActionKey } from '../../cli/build/action-key.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), 'orion-key-memos-'));
  dirs.push(d);
  return d;
}

function write(file: string, text: string) {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
}

const entry = (p: string, text: string, isExecutable = false): TreeFileEntry => ({ path: p, digest: digestOf(Buffer.from(text)), isExecutable });

describe('include scanner', () => {
  it("keeps the files' #include lines across builds by content: a rebuild scans unchanged headers without reading them, never a stale list", async () => {
    const root = await tempDir();
    const storeFile = path.join(root, 'cache/includes.json');
    const [main, h] = [path.join(root, 'main.c'), path.join(root, 'h.h')];
    write(main, '#include "h.h"\n');
    write(h, '#include "a.h"\n');
    write(path.join(root, 'a.h'), '');
    write(path.join(root, 'b.h'), '');
    const sha = (text: string) => digestOf(Buffer.from(text)).hash;
    const hashes = new Map<string, string>();
    const contentHash = async (f: string) => hashes.get(f);
    hashes.set(main, sha('#include "h.h"\n'));
    hashes.set(h, sha('#include "a.h"\n'));
    const first = loadDirectiveStore(storeFile);
    const one = await createIncludeScanner(root, { store: first, contentHash }).scan([main], [], []);
    expect(one.found).toEqual([path.join(root, 'a.h'), h]);
    await first.save();

    // The next build: h.h's content is known by its hash, so its lines come from the store (the
    // file on disk now says b.h, but the build's state says it still holds what was stored).
    write(h, '#include "b.h"\n');
    const second = loadDirectiveStore(storeFile);
    expect((await createIncludeScanner(root, { store: second, contentHash }).scan([main], [], [])).found).toEqual([path.join(root, 'a.h'), h]);
    // Its real new content has another hash: read, and stored under the hash of what was read.
    hashes.set(h, sha('#include "b.h"\n'));
    expect((await createIncludeScanner(root, { store: second, contentHash }).scan([main], [], [])).found).toEqual([path.join(root, 'b.h'), h]);
    // A file whose state is older than what is read (edited after it was hashed) is parsed from
    // the bytes read, and stored under their hash, not the stale one.
    write(h, '#include "a.h"\n#include "b.h"\n');
    const stale = sha('#include "c.h"\n');
    hashes.set(h, stale);
    expect((await createIncludeScanner(root, { store: second, contentHash }).scan([main], [], [])).found).toEqual([path.join(root, 'a.h'), path.join(root, 'b.h'), h]);
    expect(second.get(stale)).toBeUndefined();
    expect(second.get(sha('#include "a.h"\n#include "b.h"\n'))).toEqual([
      { quoted: true, name: 'a.h' },
      { quoted: true, name: 'b.h' },
    ]);
    await second.save();
    // A store of another format is ignored, not trusted.
    write(storeFile, JSON.stringify({ v: 99, e: { [sha('#include "b.h"\n')]: ['"zzz.h'] } }));
    expect(loadDirectiveStore(storeFile).get(sha('#include "b.h"\n'))).toBeUndefined();
  });


  it('resolves an include again once a file appears earlier on the search path and is invalidated', async () => {
    const root = await tempDir();
    const [a, b] = [path.join(root, 'a'), path.join(root, 'b')];
    write(path.join(root, 'src/x.c'), '#include <h.h>\n');
    write(path.join(root, 'src/y.c'), '#include <h.h>\n');
    write(path.join(b, 'h.h'), '#include "deep.h"\n');
    write(path.join(b, 'deep.h'), '');
    const scanner = createIncludeScanner(root);
    const first = await scanner.scan([path.join(root, 'src/x.c')], [], [a, b]);
    expect(first.found).toEqual([path.join(b, 'deep.h'), path.join(b, 'h.h')]);
    // Another source with the same flags: the same answer (from the resolutions made before).
    expect((await scanner.scan([path.join(root, 'src/y.c')], [], [a, b])).found).toEqual(first.found);

    // A generated header now shadows b/h.h: once the build says it wrote it, the scanner sees it.
    write(path.join(a, 'h.h'), '');
    scanner.invalidate([path.join(a, 'h.h')]);
    expect((await scanner.scan([path.join(root, 'src/y.c')], [], [a, b])).found).toEqual([path.join(a, 'h.h')]);
  });

  it('keeps resolutions apart by the directories searched and by the including file for quoted includes', async () => {
    const root = await tempDir();
    write(path.join(root, 'one/m.c'), '#include "cfg.h"\n');
    write(path.join(root, 'one/cfg.h'), '');
    write(path.join(root, 'two/m.c'), '#include "cfg.h"\n');
    write(path.join(root, 'two/cfg.h'), '');
    write(path.join(root, 'inc1/sys.h'), '');
    write(path.join(root, 'inc2/sys.h'), '');
    write(path.join(root, 's.c'), '#include <sys.h>\n');
    const scanner = createIncludeScanner(root);
    expect((await scanner.scan([path.join(root, 'one/m.c')], [], [])).found).toEqual([path.join(root, 'one/cfg.h')]);
    expect((await scanner.scan([path.join(root, 'two/m.c')], [], [])).found).toEqual([path.join(root, 'two/cfg.h')]);
    expect((await scanner.scan([path.join(root, 's.c')], [], [path.join(root, 'inc1')])).found).toEqual([path.join(root, 'inc1/sys.h')]);
    expect((await scanner.scan([path.join(root, 's.c')], [], [path.join(root, 'inc2')])).found).toEqual([path.join(root, 'inc2/sys.h')]);
  });
});

describe('input-root memo', () => {
  const entries = [entry('include/a.h', 'A'), entry('src/main.c', 'int main;'), entry('tools/gen.sh', '#!/bin/sh', true)];

  it('gives the digest a full build gives, and builds the same Directories only when asked', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'trees.txt');
    const direct = buildTreeFromEntries(entries);

    const first = loadTreeMemo(file);
    expect(inputRootOf(entries, first).rootDigest).toEqual(direct.rootDigest);
    await first.save();

    const second = loadTreeMemo(file);
    expect(second.get(treeFingerprint(entries))).toEqual(direct.rootDigest);
    const memoized = inputRootOf(entries, second);
    expect(memoized.rootDigest).toEqual(direct.rootDigest);
    expect([...memoized.directories]).toEqual([...direct.directories]);
  });

  it('tells entries apart by path, content and executable bit', () => {
    const base = treeFingerprint(entries);
    expect(treeFingerprint([entries[0]!, entries[1]!, { ...entries[2]!, isExecutable: false }])).not.toBe(base);
    expect(treeFingerprint([entries[0]!, entry('src/main.c', 'int main2;'), entries[2]!])).not.toBe(base);
    expect(treeFingerprint([entry('include/b.h', 'A'), entries[1]!, entries[2]!])).not.toBe(base);
    expect(treeFingerprint(entries.slice(0, 2))).not.toBe(base);
  });

  it('ignores lines that do not parse, and says a wrong stored digest is data loss when the tree is built', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'trees.txt');
    const fp = treeFingerprint(entries);
    const wrong = digestOf(Buffer.from('not this tree'));
    writeFileSync(file, `garbage\n${fp} ${wrong.hash} ${wrong.sizeBytes}\n${fp.slice(0, 10)} short 1\n`);
    const memo = loadTreeMemo(file);
    const tree = inputRootOf(entries, memo);
    expect(tree.rootDigest).toEqual(wrong);
    expect(() => tree.directories).toThrow(expect.objectContaining({ code: Code.DATA_LOSS }));
  });

  it('writes nothing when nothing new was built', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'trees.txt');
    const memo = loadTreeMemo(file);
    await memo.save();
    expect(() => readFileSync(file)).toThrow();
  });
});

describe('key history', () => {
  const keyOf = (hash: string, inputs: Record<string, string>) =>
    ({ actionDigest: { hash, sizeBytes: 1 }, inputs: new Map(Object.entries(inputs)) }) as unknown as ActionKey;

  it('appends only the keys that changed, and reads the latest line of each action back', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'history', 'p.jsonl');
    const h1 = await loadKeyHistory(file);
    h1.record('a', keyOf('k1', { '/p/a.c': 'd1' }), ['cc', 'a.c']);
    h1.record('b', keyOf('k2', { '/p/b.c': 'd2' }), ['cc', 'b.c']);
    await h1.save();
    const size = readFileSync(file).length;

    const h2 = await loadKeyHistory(file);
    h2.record('a', keyOf('k1', { '/p/a.c': 'd1' }), ['cc', 'a.c']);
    h2.record('b', keyOf('k3', { '/p/b.c': 'd3' }), ['cc', 'b.c']);
    await h2.save();
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(4); // header, a, b, b again
    expect(readFileSync(file).length).toBeGreaterThan(size);

    const h3 = await loadKeyHistory(file, { eager: true });
    expect(h3.previous('a')).toEqual({ actionDigest: 'k1', inputs: { '/p/a.c': 'd1' }, argv: ['cc', 'a.c'] });
    expect(h3.previous('b')?.actionDigest).toBe('k3');
  });

  it('skips a line cut short, and starts over from a file of another format', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'p.jsonl');
    const h1 = await loadKeyHistory(file);
    h1.record('a', keyOf('k1', {}), ['cc']);
    await h1.save();
    appendFileSync(file, '{"id":"b","actionDig');
    const h2 = await loadKeyHistory(file, { eager: true });
    expect(h2.previous('a')?.actionDigest).toBe('k1');
    expect(h2.previous('b')).toBeUndefined();

    writeFileSync(file, JSON.stringify({ version: 1, actions: { a: { actionDigest: 'old', inputs: {}, argv: [] } } }));
    const h3 = await loadKeyHistory(file, { eager: true });
    expect(h3.previous('a')).toBeUndefined();
    h3.record('a', keyOf('k9', {}), ['cc']);
    await h3.save();
    expect((await loadKeyHistory(file, { eager: true })).previous('a')?.actionDigest).toBe('k9');
  });

  it('rewrites the log with the latest key of each action once it holds many more lines than actions', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'p.jsonl');
    for (let i = 0; i < 300; i++) {
      const h = await loadKeyHistory(file);
      h.record('a', keyOf(`k${i}`, {}), ['cc']);
      await h.save();
    }
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines.length).toBeLessThan(300);
    expect((await loadKeyHistory(file, { eager: true })).previous('a')?.actionDigest).toBe('k299');
  });
});
