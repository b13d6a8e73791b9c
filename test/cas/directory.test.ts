import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { digestOf, EMPTY_DIGEST } from '../../cas/digest.js';
import { decodeDirectory, decodeTree, encodeDirectory, encodeTree, EMPTY_DIRECTORY, validateDirectory } from '../../cas/directory.js';
import type { Directory } from '../../cas/types.js';

const HELLO = Buffer.from('int main(){}');
const HELLO_HASH = createHash('sha256').update(HELLO).digest('hex');

/** Protobuf bytes assembled by hand from the wire format spec, independent of the encoder. */
function handEncodedHelloDirectory(): Buffer {
  const digest = Buffer.concat([Buffer.from([0x0a, 64]), Buffer.from(HELLO_HASH, 'ascii'), Buffer.from([0x10, HELLO.length])]);
  const fileNode = Buffer.concat([Buffer.from([0x0a, 7]), Buffer.from('hello.c'), Buffer.from([0x12, digest.length]), digest]);
  return Buffer.concat([Buffer.from([0x0a, fileNode.length]), fileNode]);
}

const helloDir: Directory = {
  files: [{ name: 'hello.c', digest: { hash: HELLO_HASH, sizeBytes: HELLO.length }, isExecutable: false }],
  directories: [],
  symlinks: [],
};

function invalid(d: Directory): OrionError {
  try {
    validateDirectory(d);
  } catch (err) {
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.INVALID_ARGUMENT);
    return err as OrionError;
  }
  throw new Error('expected validateDirectory to throw');
}

const file = (name: string) => ({ name, digest: EMPTY_DIGEST, isExecutable: false });
const dir = (name: string) => ({ name, digest: EMPTY_DIGEST });

describe('Directory encoding', () => {
  it('encodes a small Directory byte-exactly as protobuf does, with the same SHA-256', () => {
    const expected = handEncodedHelloDirectory();
    expect(expected.length).toBe(81);
    const bytes = encodeDirectory(helloDir);
    expect(bytes.toString('hex')).toBe(expected.toString('hex'));
    expect(digestOf(bytes)).toEqual({ hash: createHash('sha256').update(expected).digest('hex'), sizeBytes: 81 });
  });

  it('encodes the empty Directory as zero bytes, so its digest is the empty digest', () => {
    expect(encodeDirectory(EMPTY_DIRECTORY).length).toBe(0);
    expect(digestOf(encodeDirectory(EMPTY_DIRECTORY))).toEqual(EMPTY_DIGEST);
  });

  it('writes is_executable as field 4 and omits it when false', () => {
    const exec = encodeDirectory({ ...helloDir, files: [{ ...helloDir.files[0]!, isExecutable: true }] });
    expect(exec.subarray(-2).toString('hex')).toBe('2001');
    expect(exec.length).toBe(83);
  });

  it('round-trips files, directories and symlinks in field order', () => {
    const d: Directory = {
      files: [file('a'), { name: 'b', digest: digestOf(Buffer.alloc(300)), isExecutable: true }],
      directories: [{ name: 'c', digest: digestOf(Buffer.from('x')) }],
      symlinks: [{ name: 'd', target: '../e/ü' }],
    };
    expect(decodeDirectory(encodeDirectory(d))).toEqual(d);
  });

  it('decode skips unknown fields such as node_properties and fixed-width fields', () => {
    const props = Buffer.from([0x32, 0x02, 0x08, 0x01]); // field 6 (node_properties), length 2
    const fixed64 = Buffer.from([0x39, 1, 2, 3, 4, 5, 6, 7, 8]); // field 7, wire type 1
    const fixed32 = Buffer.from([0x45, 1, 2, 3, 4]); // field 8, wire type 5
    const varint = Buffer.from([0x48, 0x96, 0x01]); // field 9, varint 150
    const hand = handEncodedHelloDirectory();
    const fileNode = Buffer.concat([hand.subarray(2), props, fixed64, fixed32, varint]);
    const withUnknown = Buffer.concat([Buffer.from([0x0a, fileNode.length]), fileNode, Buffer.from([0x2a, 0x00])]);
    expect(decodeDirectory(withUnknown)).toEqual(helloDir);
  });

  it('decode rejects truncated and malformed input with INVALID_ARGUMENT', () => {
    const hand = handEncodedHelloDirectory();
    for (const [bytes, message] of [
      [hand.subarray(0, 40), 'malformed Directory message: length 79 exceeds remaining 38 bytes at byte 2'],
      [Buffer.from([0x0a, 0x80]), 'malformed Directory message: truncated varint at byte 2'],
      [Buffer.from([0x0b]), 'malformed Directory message: unsupported wire type 3 at byte 1'],
      [Buffer.from([0x08, 0x01]), 'malformed Directory message: field files has wire type 0, expected 2'],
      [Buffer.from([0x00, 0x01]), 'malformed Directory message: field number 0 at byte 1'],
      [Buffer.from([0x1a, 0x03, 0x0a, 0x01, 0xff]), 'malformed SymlinkNode message: field name is not valid UTF-8'],
    ] as const) {
      let caught: unknown;
      try {
        decodeDirectory(Buffer.from(bytes));
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(OrionError);
      expect((caught as OrionError).code).toBe(Code.INVALID_ARGUMENT);
      expect((caught as OrionError).message).toBe(message);
    }
  });

  it('round-trips a Tree with root and children', () => {
    const tree = { root: { files: [], directories: [dir('sub')], symlinks: [] }, children: [helloDir, EMPTY_DIRECTORY] };
    const bytes = encodeTree(tree);
    expect(decodeTree(bytes)).toEqual(tree);
    // The empty child is present as a zero-length field 2: 0x12 0x00.
    expect(bytes.subarray(-2).toString('hex')).toBe('1200');
  });
});

describe('validateDirectory', () => {
  it('accepts a sorted directory with distinct names', () => {
    expect(() => validateDirectory({ files: [file('a'), file('b')], directories: [dir('c')], symlinks: [{ name: 'd', target: 'a' }] })).not.toThrow();
  });

  it('rejects unsorted names', () => {
    expect(invalid({ files: [file('b'), file('a')], directories: [], symlinks: [] }).message).toBe('files not sorted by name: "b" before "a"');
  });

  it('sorts by UTF-8 bytes, not UTF-16 code units', () => {
    // UTF-16 code units put U+1F600 (surrogate 0xD83D) before U+FF5E; UTF-8 bytes (F0.. vs EF..) put it after.
    const bmp = '\uff5e';
    const astral = '\u{1f600}';
    expect(astral < bmp).toBe(true);
    expect(() => validateDirectory({ files: [file(bmp), file(astral)], directories: [], symlinks: [] })).not.toThrow();
    expect(invalid({ files: [file(astral), file(bmp)], directories: [], symlinks: [] }).message).toContain('not sorted');
  });

  it('rejects duplicate names within a list and across lists', () => {
    expect(invalid({ files: [file('a'), file('a')], directories: [], symlinks: [] }).message).toBe('duplicate file name "a"');
    expect(invalid({ files: [file('a')], directories: [dir('a')], symlinks: [] }).message).toBe(
      'duplicate name "a" used by more than one of files, directories and symlinks',
    );
  });

  it("rejects '..', '.', empty names and names containing '/'", () => {
    expect(invalid({ files: [], directories: [dir('..')], symlinks: [] }).message).toBe('invalid directory name ".."');
    expect(invalid({ files: [file('.')], directories: [], symlinks: [] }).message).toBe('invalid file name "."');
    expect(invalid({ files: [file('')], directories: [], symlinks: [] }).message).toBe('invalid file name: empty');
    expect(invalid({ files: [], directories: [], symlinks: [{ name: 'a/b', target: 'x' }] }).message).toBe(`invalid symlink name "a/b": contains '/'`);
  });

  it('rejects child digests that are not SHA-256', () => {
    expect(invalid({ files: [{ name: 'a', digest: { hash: 'abc', sizeBytes: 3 }, isExecutable: false }], directories: [], symlinks: [] }).message).toContain('invalid digest hash "abc"');
  });
});
