import { randomBytes } from 'node:crypto';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { describe, expect, it } from 'vitest';
import {
  decodeBatchReadBlobsResponse,
  decodeBatchUpdateBlobsRequest,
  decodeReadResponse,
  decodeWriteRequest,
  encodeBatchReadBlobsResponse,
  encodeBatchUpdateBlobsRequest,
  encodeReadResponse,
  encodeWriteRequest,
} from '../../proto/blob-codecs.js';
import { BatchReadBlobsResponse, BatchUpdateBlobsRequest } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ReadResponse, WriteRequest } from '../../proto/gen/google/bytestream/bytestream.js';

const hash = 'ab'.repeat(32);
const gen = (u8: Uint8Array) => Buffer.from(u8);

describe('blob codecs: the generated encoders\' bytes, fewer copies', () => {
  it('ReadResponse: empty and large data', () => {
    for (const data of [Buffer.alloc(0), Buffer.from('x'), randomBytes(1 << 20)]) {
      const fast = encodeReadResponse({ data });
      expect(fast.equals(gen(ReadResponse.encode({ data }).finish()))).toBe(true);
      expect(decodeReadResponse(fast).data.equals(data)).toBe(true);
      expect(ReadResponse.decode(fast).data.equals(data)).toBe(true);
    }
  });

  it('WriteRequest: every field, defaults left out, offsets past 2^32', () => {
    const cases: WriteRequest[] = [
      { resourceName: `uploads/u/blobs/${hash}/3`, writeOffset: 0, finishWrite: false, data: Buffer.from('abc') },
      { resourceName: '', writeOffset: 1 << 20, finishWrite: true, data: randomBytes(70_000) },
      { resourceName: 'ünïcode/blobs', writeOffset: 2 ** 40 + 7, finishWrite: true, data: Buffer.alloc(0) },
      { resourceName: '', writeOffset: 0, finishWrite: false, data: Buffer.alloc(0) },
    ];
    for (const m of cases) {
      const fast = encodeWriteRequest(m);
      expect(fast.equals(gen(WriteRequest.encode(m).finish()))).toBe(true);
      expect(decodeWriteRequest(fast)).toEqual(m);
    }
    // A negative offset (invalid for ByteStream, refused by the head) still encodes as the generated code does.
    const negative = { resourceName: 'r', writeOffset: -5, finishWrite: false, data: Buffer.from('z') };
    expect(encodeWriteRequest(negative).equals(gen(WriteRequest.encode(negative).finish()))).toBe(true);
    expect(decodeWriteRequest(encodeWriteRequest(negative)).writeOffset).toBe(-5);
  });

  it('BatchReadBlobsResponse: digests, data, statuses with details, compressors', () => {
    const m: BatchReadBlobsResponse = {
      responses: [
        { digest: { hash, sizeBytes: 3 }, data: Buffer.from('abc'), status: { code: 0, message: '', details: [] }, compressor: 0 },
        { digest: { hash, sizeBytes: 0 }, data: Buffer.alloc(0), status: { code: 5, message: 'not found', details: [{ typeUrl: 't', value: Buffer.from([1, 2]) }] }, compressor: 0 },
        { digest: undefined, data: randomBytes(30_000), status: undefined, compressor: 1 },
        { digest: { hash: '', sizeBytes: 2 ** 35 }, data: Buffer.alloc(0), status: undefined, compressor: 0 },
      ],
    };
    const fast = encodeBatchReadBlobsResponse(m);
    expect(fast.equals(gen(BatchReadBlobsResponse.encode(m).finish()))).toBe(true);
    expect(decodeBatchReadBlobsResponse(fast)).toEqual(BatchReadBlobsResponse.decode(fast));
    expect(encodeBatchReadBlobsResponse({ responses: [] }).length).toBe(0);
  });

  it('BatchUpdateBlobsRequest: instance name, requests, digest function', () => {
    const m: BatchUpdateBlobsRequest = {
      instanceName: 'main',
      requests: [
        { digest: { hash, sizeBytes: 5 }, data: Buffer.from('hello'), compressor: 0 },
        { digest: { hash, sizeBytes: 0 }, data: Buffer.alloc(0), compressor: 2 },
        ...Array.from({ length: 50 }, (_, i) => ({ digest: { hash, sizeBytes: i * 1000 }, data: randomBytes(i * 37), compressor: 0 })),
      ],
      digestFunction: 1,
    };
    const fast = encodeBatchUpdateBlobsRequest(m);
    expect(fast.equals(gen(BatchUpdateBlobsRequest.encode(m).finish()))).toBe(true);
    expect(decodeBatchUpdateBlobsRequest(fast)).toEqual(BatchUpdateBlobsRequest.decode(fast));
    const bare = { instanceName: '', requests: [], digestFunction: 0 };
    expect(decodeBatchUpdateBlobsRequest(encodeBatchUpdateBlobsRequest(bare))).toEqual(bare);
  });

  it('decoded blob bytes are views of the received message, not copies', () => {
    const data = randomBytes(4096);
    const wire = encodeReadResponse({ data });
    const got = decodeReadResponse(wire).data;
    expect(got.buffer).toBe(wire.buffer);
    const batch = encodeBatchUpdateBlobsRequest({ instanceName: '', requests: [{ digest: { hash, sizeBytes: 4096 }, data, compressor: 0 }], digestFunction: 0 });
    expect(decodeBatchUpdateBlobsRequest(batch).requests[0]!.data.buffer).toBe(batch.buffer);
  });

  it('skips unknown fields of every wire type, as the generated decoders do', () => {
    const w = new BinaryWriter();
    w.uint32((7 << 3) | 0).uint64(123);
    w.uint32((8 << 3) | 1).fixed64(9);
    w.uint32((9 << 3) | 5).fixed32(9);
    w.uint32((11 << 3) | 2).bytes(Buffer.from('unknown'));
    w.uint32((10 << 3) | 2).bytes(Buffer.from('data'));
    const wire = gen(w.finish());
    expect(decodeReadResponse(wire).data.toString()).toBe('data');
    expect(decodeWriteRequest(wire).data.toString()).toBe('data');
  });

  it('malformed input throws (grpc-js fails the call, the process carries on)', () => {
    // A length running past the end.
    expect(() => decodeReadResponse(Buffer.from([0x52, 0x05, 0x01]))).toThrow();
    // Field number 0 and a stray end-group tag.
    expect(() => decodeWriteRequest(Buffer.from([0x00]))).toThrow(/illegal tag/);
    expect(() => decodeBatchReadBlobsResponse(Buffer.from([0x0c]))).toThrow(/illegal tag/);
    // An inner request whose digest runs past the request's own length.
    expect(() => decodeBatchUpdateBlobsRequest(Buffer.from([0x12, 0x02, 0x0a, 0x05, 0x0a, 0x03, 0x61, 0x62, 0x63]))).toThrow(/BatchUpdateBlobsRequest.requests: a field runs past the message's length/);
    // A write offset past 2^53.
    const big = new BinaryWriter().uint32(16).uint64(2n ** 60n).finish();
    expect(() => decodeWriteRequest(big)).toThrow(/safe integer/);
  });
});
