import { chmod, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { putHashedFile, type BlobStore } from '../../cas/blob-store.js';
import { digestKey, digestOf, EMPTY_DIGEST } from '../../cas/digest.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { useTempDirs } from './tmpdir.js';

async function collect(src: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of src) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

async function rejection(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

const tempDirs = useTempDirs();

const stores: [string, () => Promise<BlobStore>][] = [
  ['memory', async () => createMemoryBlobStore()],
  ['disk', async () => createDiskBlobStore(await tempDirs())],
];

describe.each(stores)('%s blob store', (_, makeStore) => {
  const hello = Buffer.from('hello, orion');
  const helloDigest = digestOf(hello);

  it('always holds the empty blob', async () => {
    const store = await makeStore();
    expect(await store.has(EMPTY_DIGEST)).toBe(true);
    expect(await store.findMissing([EMPTY_DIGEST])).toEqual([]);
    expect((await store.get(EMPTY_DIGEST)).length).toBe(0);
    expect((await collect(store.getStream(EMPTY_DIGEST))).length).toBe(0);
    await store.put(EMPTY_DIGEST, Buffer.alloc(0));
  });

  it('round-trips a blob through put, has, get and getStream', async () => {
    const store = await makeStore();
    expect(await store.has(helloDigest)).toBe(false);
    await store.put(helloDigest, hello);
    expect(await store.has(helloDigest)).toBe(true);
    expect(await store.get(helloDigest)).toEqual(hello);
    expect(await collect(store.getStream(helloDigest))).toEqual(hello);
  });

  it('getStream honours offset and limit, limit 0 meaning to the end', async () => {
    const store = await makeStore();
    await store.put(helloDigest, hello);
    expect((await collect(store.getStream(helloDigest, 7))).toString()).toBe('orion');
    expect((await collect(store.getStream(helloDigest, 0, 5))).toString()).toBe('hello');
    expect((await collect(store.getStream(helloDigest, 7, 0))).toString()).toBe('orion');
    expect((await collect(store.getStream(helloDigest, hello.length))).length).toBe(0);
    const err = await rejection(collect(store.getStream(helloDigest, hello.length + 1)));
    expect(err.code).toBe(Code.OUT_OF_RANGE);
  });

  it('putStream stores a chunked stream', async () => {
    const store = await makeStore();
    const data = Buffer.alloc(200_000, 'abcdefg');
    await store.putStream(digestOf(data), Readable.from([data.subarray(0, 1), data.subarray(1, 70_000), data.subarray(70_000)]));
    expect((await store.get(digestOf(data))).equals(data)).toBe(true);
  });

  it('get of an absent blob is NOT_FOUND, and so is reading its stream', async () => {
    const store = await makeStore();
    const err = await rejection(store.get(helloDigest));
    expect(err.code).toBe(Code.NOT_FOUND);
    expect(err.message).toBe(`blob ${digestKey(helloDigest)} not found`);
    expect((await rejection(collect(store.getStream(helloDigest)))).code).toBe(Code.NOT_FOUND);
  });

  it('findMissing lists absent digests once each', async () => {
    const store = await makeStore();
    const other = digestOf(Buffer.from('other'));
    await store.put(helloDigest, hello);
    expect(await store.findMissing([other, helloDigest, EMPTY_DIGEST, other])).toEqual([other]);
  });

  it('a write whose content does not match its digest is INVALID_ARGUMENT and stores nothing', async () => {
    const store = await makeStore();
    const wrong = Buffer.from('hello, orioN');
    const err = await rejection(store.put(helloDigest, wrong));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toBe(`digest mismatch: expected ${digestKey(helloDigest)}, got ${digestKey(digestOf(wrong))}`);
    expect(await store.has(helloDigest)).toBe(false);

    const longer = Buffer.concat([hello, Buffer.from('!')]);
    const streamErr = await rejection(store.putStream(helloDigest, Readable.from([hello, Buffer.from('!')])));
    expect(streamErr.message).toBe(`digest mismatch: expected ${digestKey(helloDigest)}, got ${digestKey(digestOf(longer))}`);
    expect(await store.has(helloDigest)).toBe(false);
  });

  it('verifies a write even when the blob is already stored', async () => {
    const store = await makeStore();
    await store.put(helloDigest, hello);
    expect((await rejection(store.put(helloDigest, Buffer.from('nope')))).code).toBe(Code.INVALID_ARGUMENT);
    expect(await store.get(helloDigest)).toEqual(hello);
  });

  it('rejects malformed digests with INVALID_ARGUMENT', async () => {
    const store = await makeStore();
    expect((await rejection(store.has({ hash: 'ABC', sizeBytes: 1 }))).code).toBe(Code.INVALID_ARGUMENT);
    expect((await rejection(store.put({ hash: helloDigest.hash, sizeBytes: -1 }, hello))).code).toBe(Code.INVALID_ARGUMENT);
  });
});

describe('disk blob store', () => {
  const data = Buffer.from('int main(){ return 0; }\n');
  const small = data;
  const d = digestOf(data);

  it('stores blobs read-only in sharded directories', async () => {
    const dir = await tempDirs();
    const store = createDiskBlobStore(dir);
    await store.put(d, data);
    const path = join(dir, d.hash.slice(0, 2), d.hash);
    expect(store.localPath!(d)).toBe(path);
    expect(await readFile(path)).toEqual(data);
    expect((await stat(path)).mode & 0o777).toBe(0o444);
  });

  it('putHashedFile stores a file by copy, read-only, and refuses one whose size is not the digest\'s; durable or not, small (synchronous with syncIo) or large', async () => {
    const large = Buffer.alloc(300 * 1024, 7);
    for (const [durable, data, syncIo] of [[true, small, false], [false, small, true], [false, small, false], [true, large, false], [false, large, true]] as const) {
      const d = digestOf(data);
      const dir = await tempDirs();
      const store = createDiskBlobStore(join(dir, 'cas'), { durable, syncIo });
      const file = join(dir, 'out.o');
      await writeFile(file, data);
      await store.putHashedFile!(d, file);
      expect(await store.get(d)).toEqual(data);
      expect((await stat(store.localPath!(d)!)).mode & 0o777).toBe(0o444);
      // Stored already: a second call changes nothing.
      await store.putHashedFile!(d, file);
      await writeFile(file, 'changed since it was hashed');
      const other = digestOf(Buffer.from('x'.repeat(data.length + 1)));
      const err = await rejection(store.putHashedFile!({ ...other, sizeBytes: data.length }, file));
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      expect(await readdir(join(dir, 'cas', 'tmp'))).toEqual([]);
      // Through the helper, a store without the method streams and verifies instead.
      const memory = createMemoryBlobStore();
      await writeFile(file, data);
      await putHashedFile(memory, d, file);
      expect(await memory.get(d)).toEqual(data);
    }
  });

  it('keeps blobs across store instances on the same directory', async () => {
    const dir = await tempDirs();
    await createDiskBlobStore(dir).put(d, data);
    expect(await createDiskBlobStore(dir).get(d)).toEqual(data);
  });

  it('a failed verification leaves no file behind, not even a temp file', async () => {
    const dir = await tempDirs();
    const store = createDiskBlobStore(dir);
    await rejection(store.putStream(d, Readable.from([Buffer.from('something else entirely')])));
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    expect(entries.filter((e) => e.isFile())).toEqual([]);
  });

  it('20 concurrent writers of the same blob all succeed and the stored file is correct', async () => {
    const dir = await tempDirs();
    const store = createDiskBlobStore(dir);
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
    const bd = digestOf(big);
    const chunks = (): Buffer[] => Array.from({ length: 48 }, (_, i) => big.subarray(i * 65536, (i + 1) * 65536));
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? store.put(bd, big) : store.putStream(bd, Readable.from(chunks())))));
    expect(digestOf(await readFile(store.localPath!(bd)!))).toEqual(bd);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
  });

  it('a truncated stored file counts as absent and is replaced by the next write', async () => {
    const dir = await tempDirs();
    const store = createDiskBlobStore(dir);
    await store.put(d, data);
    await chmod(store.localPath!(d)!, 0o644);
    await truncate(store.localPath!(d)!, 3);
    expect(await store.has(d)).toBe(false);
    expect((await rejection(store.get(d))).code).toBe(Code.NOT_FOUND);
    await store.put(d, data);
    expect(await store.get(d)).toEqual(data);
  });

  it('localExecutablePath gives a 0555 copy distinct from the 0444 blob, and undefined when absent', async () => {
    const store = createDiskBlobStore(await tempDirs());
    expect(await store.localExecutablePath!(d)).toBeUndefined();
    await store.put(d, data);
    const exec = (await store.localExecutablePath!(d))!;
    expect(await readFile(exec)).toEqual(data);
    const [es, ps] = [await stat(exec), await stat(store.localPath!(d)!)];
    expect(es.mode & 0o777).toBe(0o555);
    expect(ps.mode & 0o777).toBe(0o444);
    expect(es.ino).not.toBe(ps.ino);
    expect(await store.localExecutablePath!(d)).toBe(exec);
  });
});
