import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { digestKey, digestOf, digestOfFile, EMPTY_DIGEST, formatDigest, parseDigest, sha256Hex, validateDigest } from '../../cas/digest.js';
import { useTempDirs } from './tmpdir.js';

const ABC = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';

function catchError(fn: () => unknown): OrionError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(OrionError);
    return err as OrionError;
  }
  throw new Error('expected an error');
}

describe('digest', () => {
  const tempDir = useTempDirs();

  it('empty blob SHA-256 is e3b0c442...b855 with size 0', () => {
    expect(EMPTY_DIGEST).toEqual({ hash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', sizeBytes: 0 });
    expect(digestOf(Buffer.alloc(0))).toEqual(EMPTY_DIGEST);
  });

  it('"abc" hashes to the FIPS 180-2 test vector', () => {
    expect(sha256Hex(Buffer.from('abc'))).toBe(ABC);
    expect(digestOf(Buffer.from('abc'))).toEqual({ hash: ABC, sizeBytes: 3 });
  });

  it('digestOfFile hashes files of every size to the same digest as hashing them in memory', async () => {
    const dir = await tempDir();
    // Empty, small, exactly one read chunk, several chunks (synchronous path), and above 8 MiB (streamed).
    for (const size of [0, 5, 1024 * 1024, 3 * 1024 * 1024 + 7, 9 * 1024 * 1024 + 3]) {
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4096) data[i] = (i / 4096) % 251;
      const path = join(dir, `f${size}`);
      await writeFile(path, data);
      expect(await digestOfFile(path)).toEqual(digestOf(data));
    }
    await expect(digestOfFile(join(dir, 'missing'))).rejects.toThrow(/ENOENT/);
  });

  it('digestKey and formatDigest are hash/size', () => {
    expect(digestKey({ hash: ABC, sizeBytes: 3 })).toBe(`${ABC}/3`);
    expect(formatDigest({ hash: ABC, sizeBytes: 3 })).toBe(`${ABC}/3`);
  });

  it('parseDigest accepts a lowercase hash and a decimal size string', () => {
    expect(parseDigest(ABC, '3')).toEqual({ hash: ABC, sizeBytes: 3 });
    expect(parseDigest(ABC, 3)).toEqual({ hash: ABC, sizeBytes: 3 });
  });

  it('rejects uppercase, short and non-hex hashes with INVALID_ARGUMENT', () => {
    for (const hash of [ABC.toUpperCase(), ABC.slice(1), `${ABC.slice(1)}g`, '']) {
      const err = catchError(() => parseDigest(hash, 3));
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      expect(err.message).toBe(`invalid digest hash ${JSON.stringify(hash)}: expected 64 lowercase hex characters (SHA-256)`);
    }
  });

  it('rejects negative, fractional and non-numeric sizes with INVALID_ARGUMENT', () => {
    for (const size of [-1, 1.5, Number.NaN, '12x', '-3']) {
      const err = catchError(() => parseDigest(ABC, size));
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      expect(err.message).toBe(`invalid digest size ${String(size)} for ${ABC}: expected a non-negative integer`);
    }
    expect(catchError(() => validateDigest({ hash: ABC, sizeBytes: -1 })).code).toBe(Code.INVALID_ARGUMENT);
  });
});

describe('fromDigestKey', () => {
  it('turns a digestKey back into its digest', async () => {
    const { fromDigestKey, digestKey, digestOf } = await import('../../cas/digest.js');
    const d = digestOf(Buffer.from('abc'));
    expect(fromDigestKey(digestKey(d))).toEqual(d);
  });
});
