/**
 * Serializers for the four gRPC messages that carry blob bytes: ByteStream's ReadResponse and
 * WriteRequest, and the CAS's BatchReadBlobsResponse and BatchUpdateBlobsRequest.
 *
 * The generated (ts-proto) encoders write into a buffer that doubles as it fills, slice it at the
 * end, and the generated service definitions copy that once more (`Buffer.from`): a 1 MiB chunk is
 * copied four times and allocated three, before grpc-js frames it. Their decoders copy every bytes
 * field out of the received message. These write each message once, at its final size, with the
 * blob bytes copied once; and decode blob bytes as views of the received message (grpc-js hands
 * each message over in a buffer of its own, never reused).
 *
 * The bytes on the wire are those of the generated encoders (fields in field-number order, proto3
 * defaults left out; test/proto/blob-codecs.test.ts compares them), so any REAPI peer reads them.
 * Decoding skips unknown fields and throws on malformed input, as the generated decoders do.
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { makeGenericClientConstructor } from '@grpc/grpc-js';
import {
  BatchReadBlobsResponse,
  BatchUpdateBlobsRequest,
  ContentAddressableStorageClient,
  ContentAddressableStorageService,
  Digest,
  type BatchReadBlobsResponse_Response,
  type BatchUpdateBlobsRequest_Request,
} from './gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ByteStreamClient, ByteStreamService, ReadResponse, WriteRequest } from './gen/google/bytestream/bytestream.js';
import { Status } from './gen/google/rpc/status.js';
import { encodeDigestMessage, Writer } from '../cas/proto-wire.js';

/** The generated encoders write negative varints as ten bytes; those (never sent by Orion) go through them. */
const plain = (...ns: number[]) => ns.every((n) => Number.isSafeInteger(n) && n >= 0);
/** A view of `u8` as a Buffer (no copy). */
export const asBuffer = (u8: Uint8Array): Buffer => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);

const LEN = WireType.LengthDelimited;
const VARINT = WireType.Varint;
const tagOf = (field: number, wire: WireType) => (field << 3) | wire;

/**
 * Reads the fields of a message that ends at `end` (the whole buffer when undefined): each tag
 * goes to `on`, which reads the field's value and returns true, or false to have it skipped.
 */
function readFields(reader: BinaryReader, end: number | undefined, what: string, on: (tag: number) => boolean): void {
  const stop = end ?? reader.len;
  while (reader.pos < stop) {
    const tag = reader.uint32();
    if (on(tag)) continue;
    if ((tag & 7) === WireType.EndGroup || tag >>> 3 === 0) throw new Error(`${what}: illegal tag (field ${tag >>> 3}, wire type ${tag & 7})`);
    reader.skip(tag & 7, tag >>> 3);
  }
  if (reader.pos !== stop) throw new Error(`${what}: a field runs past the message's length`);
}

export function encodeReadResponse(m: ReadResponse): Buffer {
  const w = new Writer();
  if (m.data.length > 0) w.bytes(10, m.data);
  return w.finish();
}

export function decodeReadResponse(b: Uint8Array): ReadResponse {
  const reader = new BinaryReader(b);
  const m: ReadResponse = { data: Buffer.alloc(0) };
  readFields(reader, undefined, 'ReadResponse', (tag) => tag === tagOf(10, LEN) && ((m.data = asBuffer(reader.bytes())), true));
  return m;
}

export function encodeWriteRequest(m: WriteRequest): Buffer {
  if (!plain(m.writeOffset)) return asBuffer(WriteRequest.encode(m).finish());
  const w = new Writer().string(1, m.resourceName).uint(2, m.writeOffset).bool(3, m.finishWrite);
  if (m.data.length > 0) w.bytes(10, m.data);
  return w.finish();
}

export function decodeWriteRequest(b: Uint8Array): WriteRequest {
  const reader = new BinaryReader(b);
  const m: WriteRequest = { resourceName: '', writeOffset: 0, finishWrite: false, data: Buffer.alloc(0) };
  readFields(reader, undefined, 'WriteRequest', (tag) => {
    if (tag === tagOf(1, LEN)) m.resourceName = reader.string();
    else if (tag === tagOf(2, VARINT)) m.writeOffset = safeNumber(reader.int64());
    else if (tag === tagOf(3, VARINT)) m.finishWrite = reader.bool();
    else if (tag === tagOf(10, LEN)) m.data = asBuffer(reader.bytes());
    else return false;
    return true;
  });
  return m;
}

function safeNumber(v: bigint | string | number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`value ${String(v)} is outside the safe integer range`);
  return n;
}

/** One blob of a batch: its digest, bytes (a view) and compressor at these field numbers; other fields to `more`. */
function readBlobEntry<T extends { digest?: Digest; data: Buffer; compressor: number }>(reader: BinaryReader, entry: T, what: string, compressorField: number, more?: (tag: number) => boolean): T {
  readFields(reader, reader.uint32() + reader.pos, what, (tag) => {
    if (tag === tagOf(1, LEN)) entry.digest = Digest.decode(reader, reader.uint32());
    else if (tag === tagOf(2, LEN)) entry.data = asBuffer(reader.bytes());
    else if (tag === tagOf(compressorField, VARINT)) entry.compressor = reader.int32();
    else return more?.(tag) ?? false;
    return true;
  });
  return entry;
}

export function encodeBatchReadBlobsResponse(m: BatchReadBlobsResponse): Buffer {
  if (!m.responses.every((r) => plain(r.compressor, r.digest?.sizeBytes ?? 0))) return asBuffer(BatchReadBlobsResponse.encode(m).finish());
  const w = new Writer();
  for (const r of m.responses) {
    const e = new Writer();
    if (r.digest !== undefined) e.bytes(1, encodeDigestMessage(r.digest));
    if (r.data.length > 0) e.bytes(2, r.data);
    if (r.status !== undefined) e.bytes(3, asBuffer(Status.encode(r.status).finish()));
    w.message(1, e.uint(4, r.compressor));
  }
  return w.finish();
}

export function decodeBatchReadBlobsResponse(b: Uint8Array): BatchReadBlobsResponse {
  const reader = new BinaryReader(b);
  const m: BatchReadBlobsResponse = { responses: [] };
  readFields(reader, undefined, 'BatchReadBlobsResponse', (tag) => {
    if (tag !== tagOf(1, LEN)) return false;
    const r: BatchReadBlobsResponse_Response = { digest: undefined, data: Buffer.alloc(0), status: undefined, compressor: 0 };
    m.responses.push(readBlobEntry(reader, r, 'BatchReadBlobsResponse.responses', 4, (t) => t === tagOf(3, LEN) && ((r.status = Status.decode(reader, reader.uint32())), true)));
    return true;
  });
  return m;
}

export function encodeBatchUpdateBlobsRequest(m: BatchUpdateBlobsRequest): Buffer {
  if (!plain(m.digestFunction) || !m.requests.every((r) => plain(r.compressor, r.digest?.sizeBytes ?? 0))) return asBuffer(BatchUpdateBlobsRequest.encode(m).finish());
  const w = new Writer().string(1, m.instanceName);
  for (const r of m.requests) {
    const e = new Writer();
    if (r.digest !== undefined) e.bytes(1, encodeDigestMessage(r.digest));
    if (r.data.length > 0) e.bytes(2, r.data);
    w.message(2, e.uint(3, r.compressor));
  }
  return w.uint(5, m.digestFunction).finish();
}

export function decodeBatchUpdateBlobsRequest(b: Uint8Array): BatchUpdateBlobsRequest {
  const reader = new BinaryReader(b);
  const m: BatchUpdateBlobsRequest = { instanceName: '', requests: [], digestFunction: 0 };
  readFields(reader, undefined, 'BatchUpdateBlobsRequest', (tag) => {
    if (tag === tagOf(1, LEN)) m.instanceName = reader.string();
    else if (tag === tagOf(2, LEN)) m.requests.push(readBlobEntry(reader, { digest: undefined, data: Buffer.alloc(0), compressor: 0 } as BatchUpdateBlobsRequest_Request, 'BatchUpdateBlobsRequest.requests', 3));
    else if (tag === tagOf(5, VARINT)) m.digestFunction = reader.int32();
    else return false;
    return true;
  });
  return m;
}

/** ByteStream with the blob codecs: servers and clients both use it. */
export const ByteStreamDefinition: typeof ByteStreamService = {
  ...ByteStreamService,
  read: { ...ByteStreamService.read, responseSerialize: encodeReadResponse, responseDeserialize: decodeReadResponse },
  write: { ...ByteStreamService.write, requestSerialize: encodeWriteRequest, requestDeserialize: decodeWriteRequest },
};

/** The REAPI CAS with the blob codecs. */
export const CasDefinition: typeof ContentAddressableStorageService = {
  ...ContentAddressableStorageService,
  batchReadBlobs: { ...ContentAddressableStorageService.batchReadBlobs, responseSerialize: encodeBatchReadBlobsResponse, responseDeserialize: decodeBatchReadBlobsResponse },
  batchUpdateBlobs: { ...ContentAddressableStorageService.batchUpdateBlobs, requestSerialize: encodeBatchUpdateBlobsRequest, requestDeserialize: decodeBatchUpdateBlobsRequest },
};

export const BlobByteStreamClient = makeGenericClientConstructor(ByteStreamDefinition, 'google.bytestream.ByteStream') as unknown as typeof ByteStreamClient;
export const BlobCasClient = makeGenericClientConstructor(CasDefinition, 'build.bazel.remote.execution.v2.ContentAddressableStorage') as unknown as typeof ContentAddressableStorageClient;
