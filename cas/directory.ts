/** REAPI Directory and Tree messages: canonical encoding, decoding and validation. */
import { invalidArgument } from '../common/errors.js';
import { digestOf, validateDigest } from './digest.js';
import { decodeDirectoryMessage, decodeTreeMessage, encodeDirectoryMessage, encodeTreeMessage } from './proto-wire.js';
import type { Digest, Directory, Tree } from './types.js';

export const encodeDirectory: (d: Directory) => Buffer = encodeDirectoryMessage;
export const decodeDirectory: (buf: Buffer) => Directory = decodeDirectoryMessage;
export const encodeTree: (t: Tree) => Buffer = encodeTreeMessage;
export const decodeTree: (buf: Buffer) => Tree = decodeTreeMessage;

export const EMPTY_DIRECTORY: Directory = Object.freeze({ files: [], directories: [], symlinks: [] });

/** Orders names as REAPI requires: by their UTF-8 bytes. */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Encodes `d` and returns the bytes with their digest. */
export function encodeDirectoryWithDigest(d: Directory): { bytes: Buffer; digest: Digest } {
  const bytes = encodeDirectory(d);
  return { bytes, digest: digestOf(bytes) };
}

export function validateName(name: string, kind: string): void {
  if (name === '') throw invalidArgument(`invalid ${kind} name: empty`);
  if (name === '.' || name === '..') throw invalidArgument(`invalid ${kind} name ${JSON.stringify(name)}`);
  if (name.includes('/')) throw invalidArgument(`invalid ${kind} name ${JSON.stringify(name)}: contains '/'`);
  if (name.includes('\0')) throw invalidArgument(`invalid ${kind} name ${JSON.stringify(name)}: contains NUL`);
}

/**
 * Throws INVALID_ARGUMENT unless `d` is a valid REAPI Directory: valid names,
 * each list strictly sorted by name, no name used twice, valid digests.
 */
export function validateDirectory(d: Directory): void {
  const seen = new Set<string>();
  const lists: [string, { name: string; digest?: Digest }[]][] = [
    ['file', d.files],
    ['directory', d.directories],
    ['symlink', d.symlinks],
  ];
  for (const [kind, nodes] of lists) {
    let prev: string | undefined;
    for (const n of nodes) {
      validateName(n.name, kind);
      if (prev !== undefined && compareNames(prev, n.name) >= 0) {
        throw invalidArgument(prev === n.name ? `duplicate ${kind} name ${JSON.stringify(n.name)}` : `${kind}s not sorted by name: ${JSON.stringify(prev)} before ${JSON.stringify(n.name)}`);
      }
      if (seen.has(n.name)) throw invalidArgument(`duplicate name ${JSON.stringify(n.name)} used by more than one of files, directories and symlinks`);
      seen.add(n.name);
      if (n.digest) validateDigest(n.digest);
      prev = n.name;
    }
  }
}
