import type { ContentAddressableStorageServer } from '../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { Code, OrionError, statusOf } from '../common/errors.js';
import type { BlobStore } from '../cas/blob-store.js';
import { digestKey } from '../cas/digest.js';
import { decodeDirectory } from '../cas/directory.js';
import type { Directory as DomainDirectory } from '../cas/types.js';
import { digestFromPb, digestToPb, statusToPb } from '../proto/convert.js';
import { serverStream, unary } from '../proto/grpc-status.js';

export interface CasServiceLimits {
  /** Largest total of a BatchUpdateBlobs / BatchReadBlobs request (advertised in Capabilities). */
  maxBatchTotalBytes: number;
  /** Most digests in one FindMissingBlobs / batch request. */
  maxBatchDigests: number;
  /** Largest Directory blob GetTree reads (a Directory is a message; default 16 MiB). */
  maxDirectoryBytes?: number;
}

export const DEFAULT_CAS_LIMITS: CasServiceLimits = { maxBatchTotalBytes: 4 * 1024 * 1024 - 64 * 1024, maxBatchDigests: 100_000 };

const okStatus = () => statusToPb(Code.OK, '');

function dirToPb(d: DomainDirectory) {
  return {
    files: d.files.map((f) => ({ name: f.name, digest: digestToPb(f.digest), isExecutable: f.isExecutable, nodeProperties: undefined })),
    directories: d.directories.map((x) => ({ name: x.name, digest: digestToPb(x.digest) })),
    symlinks: d.symlinks.map((s) => ({ name: s.name, target: s.target, nodeProperties: undefined })),
    nodeProperties: undefined,
  };
}

export function createCasService(cas: BlobStore, limits: CasServiceLimits = DEFAULT_CAS_LIMITS): ContentAddressableStorageServer {
  function checkCount(n: number, what: string) {
    if (n > limits.maxBatchDigests) {
      throw new OrionError(Code.INVALID_ARGUMENT, `${what} names ${n} digests; the limit is ${limits.maxBatchDigests}`);
    }
  }
  return {
    findMissingBlobs: unary(async (req) => {
      checkCount(req.blobDigests.length, 'FindMissingBlobs');
      const digests = req.blobDigests.map((d, i) => digestFromPb(d, `blob_digests[${i}]`));
      const missing = await cas.findMissing(digests);
      return { missingBlobDigests: missing.map(digestToPb) };
    }),
    batchUpdateBlobs: unary(async (req) => {
      checkCount(req.requests.length, 'BatchUpdateBlobs');
      const total = req.requests.reduce((n, r) => n + r.data.length, 0);
      if (total > limits.maxBatchTotalBytes) {
        throw new OrionError(Code.INVALID_ARGUMENT, `BatchUpdateBlobs carries ${total} bytes; the limit is ${limits.maxBatchTotalBytes} (use ByteStream Write for large blobs)`);
      }
      const responses = await Promise.all(
        req.requests.map(async (r, i) => {
          try {
            if (r.compressor !== 0) throw new OrionError(Code.INVALID_ARGUMENT, `requests[${i}]: compressor ${r.compressor} is not supported`);
            const d = digestFromPb(r.digest, `requests[${i}].digest`);
            await cas.put(d, r.data);
            return { digest: r.digest, status: okStatus() };
          } catch (err) {
            return { digest: r.digest, status: statusToPb(statusOf(err), (err as Error).message) };
          }
        }),
      );
      return { responses };
    }),
    batchReadBlobs: unary(async (req) => {
      checkCount(req.digests.length, 'BatchReadBlobs');
      const digests = req.digests.map((d, i) => digestFromPb(d, `digests[${i}]`));
      const total = digests.reduce((n, d) => n + d.sizeBytes, 0);
      if (total > limits.maxBatchTotalBytes) {
        throw new OrionError(Code.INVALID_ARGUMENT, `BatchReadBlobs asks for ${total} bytes; the limit is ${limits.maxBatchTotalBytes} (use ByteStream Read for large blobs)`);
      }
      const responses = await Promise.all(
        digests.map(async (d) => {
          try {
            return { digest: digestToPb(d), data: await cas.get(d), status: okStatus(), compressor: 0 };
          } catch (err) {
            return { digest: digestToPb(d), data: Buffer.alloc(0), status: statusToPb(statusOf(err), (err as Error).message), compressor: 0 };
          }
        }),
      );
      return { responses };
    }),
    getTree: serverStream(async (req, call) => {
      const root = digestFromPb(req.rootDigest, 'root_digest');
      const pageSize = req.pageSize > 0 ? Math.min(req.pageSize, 10_000) : 1000;
      // Breadth-first from the root; the page token is the count already sent.
      const start = req.pageToken ? Number.parseInt(req.pageToken, 10) : 0;
      if (!Number.isInteger(start) || start < 0) throw new OrionError(Code.INVALID_ARGUMENT, `invalid page_token ${JSON.stringify(req.pageToken)}`);
      const seen = new Set<string>([digestKey(root)]);
      const queue = [root];
      let index = 0;
      let page: DomainDirectory[] = [];
      while (queue.length > 0) {
        if (call.cancelled) return;
        const d = queue.shift()!;
        let dir: DomainDirectory;
        const maxDir = limits.maxDirectoryBytes ?? 16 * 1024 * 1024;
        if (d.sizeBytes > maxDir) throw new OrionError(Code.INVALID_ARGUMENT, `directory ${digestKey(d)} of tree ${digestKey(root)} is ${d.sizeBytes} bytes; a Directory may be at most ${maxDir}`);
        try {
          dir = decodeDirectory(await cas.get(d));
        } catch (err) {
          if (statusOf(err) === Code.NOT_FOUND) throw new OrionError(Code.NOT_FOUND, `directory ${digestKey(d)} of tree ${digestKey(root)} is not in the CAS`);
          throw err;
        }
        for (const sub of dir.directories) {
          if (!seen.has(digestKey(sub.digest))) {
            seen.add(digestKey(sub.digest));
            queue.push(sub.digest);
          }
        }
        if (index++ < start) continue;
        page.push(dir);
        if (page.length >= pageSize) {
          call.write({ directories: page.map(dirToPb), nextPageToken: queue.length > 0 ? String(index) : '' });
          page = [];
        }
      }
      if (page.length > 0 || index <= start) call.write({ directories: page.map(dirToPb), nextPageToken: '' });
    }),
  };
}
