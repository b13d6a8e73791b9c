/**
 * A minimal protobuf wire codec for the REAPI messages that are content
 * addressed (Digest, FileNode, DirectoryNode, SymlinkNode, Directory, Tree;
 * Command and Action are only encoded, for keying actions without loading
 * the generated gRPC code).
 * Their digests must match what Bazel computes, so encoding is canonical:
 * fields in field-number order, proto3 default values omitted. Decoding skips
 * unknown fields (e.g. node_properties) and rejects malformed input.
 */
import { invalidArgument } from '../common/errors.js';
import type { Action, Command, Digest, Directory, DirectoryNode, FileNode, Platform, SymlinkNode, Tree } from './types.js';

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Collects a message's fields as parts, joined once by `finish` (field values are not copied until then). */
export class Writer {
  private readonly parts: Buffer[] = [];
  private size = 0;

  private push(b: Buffer): void {
    this.parts.push(b);
    this.size += b.length;
  }

  private varint(v: number): void {
    const bytes: number[] = [];
    while (v >= 0x80) {
      bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    bytes.push(v);
    this.push(Buffer.from(bytes));
  }

  uint(field: number, v: number): this {
    if (v !== 0) {
      this.varint((field << 3) | WIRE_VARINT);
      this.varint(v);
    }
    return this;
  }

  bool(field: number, v: boolean): this {
    return this.uint(field, v ? 1 : 0);
  }

  string(field: number, s: string): this {
    return s === '' ? this : this.bytes(field, Buffer.from(s, 'utf8'));
  }

  /** An element of a repeated string field: written even when empty. */
  element(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, 'utf8'));
  }

  /** Length-delimited field; written even when empty (used for sub-messages, whose presence matters). */
  bytes(field: number, b: Buffer): this {
    this.varint((field << 3) | WIRE_LEN);
    this.varint(b.length);
    this.push(b);
    return this;
  }

  /** An embedded message another writer collected, its parts taken as they are (a blob in it is copied once, by `finish`). */
  message(field: number, w: Writer): this {
    this.varint((field << 3) | WIRE_LEN);
    this.varint(w.size);
    for (const p of w.parts) this.push(p);
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts, this.size);
  }
}

type FieldValue = { wire: typeof WIRE_VARINT; value: number } | { wire: typeof WIRE_LEN; value: Buffer };

/** Yields the known-wire-type fields of a message, skipping fixed-width ones; throws on malformed input. */
function* fields(buf: Buffer, what: string): Generator<[number, FieldValue]> {
  let pos = 0;
  const malformed = (why: string) => invalidArgument(`malformed ${what} message: ${why} at byte ${pos}`);
  const varint = (): number => {
    let result = 0;
    for (let i = 0; i < 10; i++) {
      if (pos >= buf.length) throw malformed('truncated varint');
      const b = buf[pos++]!;
      result += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) throw malformed('varint out of range');
        return result;
      }
    }
    throw malformed('varint longer than 10 bytes');
  };
  while (pos < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) throw malformed('field number 0');
    switch (wire) {
      case WIRE_VARINT:
        yield [field, { wire, value: varint() }];
        break;
      case WIRE_LEN: {
        const len = varint();
        if (pos + len > buf.length) throw malformed(`length ${len} exceeds remaining ${buf.length - pos} bytes`);
        const value = buf.subarray(pos, pos + len);
        pos += len;
        yield [field, { wire, value }];
        break;
      }
      case WIRE_FIXED64:
      case WIRE_FIXED32: {
        const len = wire === WIRE_FIXED64 ? 8 : 4;
        if (pos + len > buf.length) throw malformed('truncated fixed-width field');
        pos += len;
        break;
      }
      default:
        throw malformed(`unsupported wire type ${wire}`);
    }
  }
}

function expectLen(v: FieldValue, what: string, field: string): Buffer {
  if (v.wire !== WIRE_LEN) throw invalidArgument(`malformed ${what} message: field ${field} has wire type ${v.wire}, expected 2`);
  return v.value;
}

function expectVarint(v: FieldValue, what: string, field: string): number {
  if (v.wire !== WIRE_VARINT) throw invalidArgument(`malformed ${what} message: field ${field} has wire type ${v.wire}, expected 0`);
  return v.value;
}

function expectString(v: FieldValue, what: string, field: string): string {
  try {
    return utf8.decode(expectLen(v, what, field));
  } catch (err) {
    if (err instanceof TypeError) throw invalidArgument(`malformed ${what} message: field ${field} is not valid UTF-8`);
    throw err;
  }
}

export function encodeDigestMessage(d: Digest): Buffer {
  return new Writer().string(1, d.hash).uint(2, d.sizeBytes).finish();
}

export function decodeDigestMessage(buf: Buffer): Digest {
  const d: Digest = { hash: '', sizeBytes: 0 };
  for (const [f, v] of fields(buf, 'Digest')) {
    if (f === 1) d.hash = expectString(v, 'Digest', 'hash');
    else if (f === 2) d.sizeBytes = expectVarint(v, 'Digest', 'size_bytes');
  }
  return d;
}

function encodeFileNode(n: FileNode): Buffer {
  return new Writer().string(1, n.name).bytes(2, encodeDigestMessage(n.digest)).bool(4, n.isExecutable).finish();
}

function decodeFileNode(buf: Buffer): FileNode {
  const n: FileNode = { name: '', digest: { hash: '', sizeBytes: 0 }, isExecutable: false };
  for (const [f, v] of fields(buf, 'FileNode')) {
    if (f === 1) n.name = expectString(v, 'FileNode', 'name');
    else if (f === 2) n.digest = decodeDigestMessage(expectLen(v, 'FileNode', 'digest'));
    else if (f === 4) n.isExecutable = expectVarint(v, 'FileNode', 'is_executable') !== 0;
  }
  return n;
}

function encodeDirectoryNode(n: DirectoryNode): Buffer {
  return new Writer().string(1, n.name).bytes(2, encodeDigestMessage(n.digest)).finish();
}

function decodeDirectoryNode(buf: Buffer): DirectoryNode {
  const n: DirectoryNode = { name: '', digest: { hash: '', sizeBytes: 0 } };
  for (const [f, v] of fields(buf, 'DirectoryNode')) {
    if (f === 1) n.name = expectString(v, 'DirectoryNode', 'name');
    else if (f === 2) n.digest = decodeDigestMessage(expectLen(v, 'DirectoryNode', 'digest'));
  }
  return n;
}

function encodeSymlinkNode(n: SymlinkNode): Buffer {
  return new Writer().string(1, n.name).string(2, n.target).finish();
}

function decodeSymlinkNode(buf: Buffer): SymlinkNode {
  const n: SymlinkNode = { name: '', target: '' };
  for (const [f, v] of fields(buf, 'SymlinkNode')) {
    if (f === 1) n.name = expectString(v, 'SymlinkNode', 'name');
    else if (f === 2) n.target = expectString(v, 'SymlinkNode', 'target');
  }
  return n;
}

function encodePlatform(p: Platform): Buffer {
  const w = new Writer();
  for (const x of p.properties) w.bytes(1, new Writer().string(1, x.name).string(2, x.value).finish());
  return w.finish();
}

/** build.bazel.remote.execution.v2.Command, canonical (fields in number order, defaults omitted). */
export function encodeCommandMessage(c: Command): Buffer {
  const w = new Writer();
  for (const a of c.arguments) w.element(1, a);
  for (const v of c.environmentVariables) w.bytes(2, new Writer().string(1, v.name).string(2, v.value).finish());
  for (const f of c.outputFiles) w.element(3, f);
  for (const d of c.outputDirectories) w.element(4, d);
  if (c.platform) w.bytes(5, encodePlatform(c.platform));
  w.string(6, c.workingDirectory);
  for (const p of c.outputPaths) w.element(7, p);
  return w.finish();
}

/** build.bazel.remote.execution.v2.Action, canonical. */
export function encodeActionMessage(a: Action): Buffer {
  const w = new Writer().bytes(1, encodeDigestMessage(a.commandDigest)).bytes(2, encodeDigestMessage(a.inputRootDigest));
  if (a.timeoutMs) w.bytes(6, new Writer().uint(1, Math.floor(a.timeoutMs / 1000)).uint(2, (a.timeoutMs % 1000) * 1e6).finish());
  w.bool(7, a.doNotCache);
  if (a.salt && a.salt.length > 0) w.bytes(9, a.salt);
  if (a.platform) w.bytes(10, encodePlatform(a.platform));
  return w.finish();
}

export function encodeDirectoryMessage(d: Directory): Buffer {
  const w = new Writer();
  for (const n of d.files) w.bytes(1, encodeFileNode(n));
  for (const n of d.directories) w.bytes(2, encodeDirectoryNode(n));
  for (const n of d.symlinks) w.bytes(3, encodeSymlinkNode(n));
  return w.finish();
}

export function decodeDirectoryMessage(buf: Buffer): Directory {
  const d: Directory = { files: [], directories: [], symlinks: [] };
  for (const [f, v] of fields(buf, 'Directory')) {
    if (f === 1) d.files.push(decodeFileNode(expectLen(v, 'Directory', 'files')));
    else if (f === 2) d.directories.push(decodeDirectoryNode(expectLen(v, 'Directory', 'directories')));
    else if (f === 3) d.symlinks.push(decodeSymlinkNode(expectLen(v, 'Directory', 'symlinks')));
  }
  return d;
}

export function encodeTreeMessage(t: Tree): Buffer {
  const w = new Writer().bytes(1, encodeDirectoryMessage(t.root));
  for (const c of t.children) w.bytes(2, encodeDirectoryMessage(c));
  return w.finish();
}

export function decodeTreeMessage(buf: Buffer): Tree {
  const t: Tree = { root: { files: [], directories: [], symlinks: [] }, children: [] };
  for (const [f, v] of fields(buf, 'Tree')) {
    if (f === 1) t.root = decodeDirectoryMessage(expectLen(v, 'Tree', 'root'));
    else if (f === 2) t.children.push(decodeDirectoryMessage(expectLen(v, 'Tree', 'children')));
  }
  return t;
}
