/**
 * The executor's side of peer transfers: inputs the assignment says another
 * node holds are read from that node first, the rest (and whatever the peer
 * did not give) from the head, and the bytes from each are reported, with and
 * without the exec-root cache.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { silentLogger } from '../../common/logger.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestKey, digestOf, fromDigestKey } from '../../cas/digest.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { buildTreeFromDisk } from '../../cas/merkle.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import type { Action, Command, Digest } from '../../cas/types.js';
import { createExecRootCache } from '../../node/exec-root-cache.js';
import { createExecutor, type Assignment } from '../../node/executor.js';
import type { PeerFetcher } from '../../node/peer-endpoint.js';
import { createProcessRunner } from '../../sandbox/runner.js';

const OBJECT = Buffer.alloc(50_000, 7);
const SOURCE = Buffer.from('int x;\n');
const PEER = '127.0.0.1:4242';

let tmp: string;
let local: BlobStore;
let remote: BlobStore;
let headReads: string[];

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-executor-peers-'));
  await mkdir(path.join(tmp, 'actions'));
  local = createDiskBlobStore(path.join(tmp, 'local-cas'));
  const memory = createMemoryBlobStore();
  headReads = [];
  remote = { ...memory, get: (d) => (headReads.push(digestKey(d)), memory.get(d)), getStream: (d, o, l) => (headReads.push(digestKey(d)), memory.getStream(d, o, l)) };
});

afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A peer holding `blobs` (or unreachable: it then gives nothing), recording what it was asked. */
function fakePeers(blobs: Buffer[], reachable = true): PeerFetcher & { asked: Array<{ address: string; keys: string[] }> } {
  const held = new Map(blobs.map((b) => [digestKey(digestOf(b)), b]));
  const asked: Array<{ address: string; keys: string[] }> = [];
  return {
    asked,
    async fetch(address, digests) {
      asked.push({ address, keys: digests.map(digestKey) });
      const out = new Map<string, Buffer>();
      if (!reachable) return out;
      for (const d of digests) if (held.has(digestKey(d))) out.set(digestKey(d), held.get(digestKey(d))!);
      return out;
    },
    close() {},
  };
}

/** An input root with a source (only on the head) and an object another node made (on the head too). */
async function inputRoot(): Promise<Digest> {
  const dir = path.join(tmp, 'src');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'a.c'), SOURCE);
  await writeFile(path.join(dir, 'b.o'), OBJECT);
  const tree = await buildTreeFromDisk(dir);
  for (const [key, bytes] of tree.directories) await remote.put(fromDigestKey(key), bytes);
  for (const [key, file] of tree.files) await remote.put(fromDigestKey(key), await readFile(file));
  return tree.rootDigest;
}

function assignment(root: Digest, peerSources: Map<string, string[]>, onTransfer: (p: number, h: number) => void): Assignment {
  const command: Command = {
    arguments: ['sh', '-c', 'cat a.c b.o | wc -c > size'],
    environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }],
    outputPaths: ['size'],
    outputFiles: [],
    outputDirectories: [],
    workingDirectory: '',
  };
  const action: Action = { commandDigest: digestOf(Buffer.from(JSON.stringify(command))), inputRootDigest: root, doNotCache: false };
  return { assignmentId: 'op/1', actionDigest: digestOf(Buffer.from(JSON.stringify(action))), action, command, peerSources, onTransfer };
}

describe.each([
  { name: 'with the exec-root cache', withRoots: true },
  { name: 'without the exec-root cache', withRoots: false },
])('executor peer transfers $name', ({ withRoots }) => {
  function executor(peers?: PeerFetcher) {
    return createExecutor({
      local,
      remote,
      peers,
      roots: withRoots ? createExecRootCache({ local, dir: path.join(tmp, 'templates') }) : undefined,
      runner: createProcessRunner(),
      workDir: path.join(tmp, 'actions'),
      nodeId: 'test-node',
      clock: createManualClock(1_000),
      log: silentLogger(),
    });
  }

  async function run(peers: PeerFetcher | undefined) {
    const root = await inputRoot();
    const transfer = { peer: -1, head: -1 };
    const objectKey = digestKey(digestOf(OBJECT));
    const result = await executor(peers).execute(
      assignment(root, new Map([[objectKey, [PEER]]]), (p, h) => Object.assign(transfer, { peer: p, head: h })),
      new AbortController().signal,
    );
    expect(result.exitCode).toBe(0);
    const size = result.outputFiles.find((f) => f.path === 'size')!;
    expect((await local.get(size.digest)).toString().trim()).toBe(String(SOURCE.length + OBJECT.length));
    return { transfer, objectKey };
  }

  it("reads an input another node made from that node, counting it as peer bytes and never asking the head for it", async () => {
    const peers = fakePeers([OBJECT]);
    const { transfer, objectKey } = await run(peers);
    expect(peers.asked).toEqual([{ address: PEER, keys: [objectKey] }]);
    expect(transfer.peer).toBe(OBJECT.length);
    expect(headReads).not.toContain(objectKey);
    // The head gave the source and the directory.
    expect(headReads).toContain(digestKey(digestOf(SOURCE)));
    expect(transfer.head).toBeGreaterThan(SOURCE.length);
    expect(transfer.head).toBeLessThan(OBJECT.length);
  });

  it('falls back to the head when the peer gives nothing, counting the input as head bytes', async () => {
    const peers = fakePeers([OBJECT], false);
    const { transfer, objectKey } = await run(peers);
    expect(peers.asked).toEqual([{ address: PEER, keys: [objectKey] }]);
    expect(transfer.peer).toBe(0);
    expect(headReads).toContain(objectKey);
    expect(transfer.head).toBeGreaterThan(OBJECT.length + SOURCE.length);
  });

  it('without a peer fetcher takes every input from the head', async () => {
    const { transfer, objectKey } = await run(undefined);
    expect(transfer.peer).toBe(0);
    expect(headReads).toContain(objectKey);
    expect(transfer.head).toBeGreaterThan(OBJECT.length + SOURCE.length);
  });
});
