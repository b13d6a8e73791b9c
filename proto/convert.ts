/**
 * Conversion between generated protobuf messages and Orion's domain types.
 * Only service edges (head/*-service.ts, node/worker.ts, gRPC clients) use it;
 * the core works on domain types.
 */
import type * as re from './gen/build/bazel/remote/execution/v2/remote_execution.js';
import type { Status as PbStatus } from './gen/google/rpc/status.js';
import { PreconditionFailure } from './gen/google/rpc/error_details.js';
import type { Any } from './gen/google/protobuf/any.js';
import { Code, OrionError, type MissingBlob } from '../common/errors.js';
import { validateDigest } from '../cas/digest.js';
import type { Action, ActionResult, Command, Digest, ExecutionMetadata, Platform } from '../cas/types.js';

/** A required digest field: INVALID_ARGUMENT naming the field when absent or malformed. */
export function digestFromPb(d: re.Digest | undefined, field: string): Digest {
  if (!d) throw new OrionError(Code.INVALID_ARGUMENT, `${field} is missing`);
  const digest = { hash: d.hash, sizeBytes: Number(d.sizeBytes) };
  try {
    validateDigest(digest);
  } catch (err) {
    throw new OrionError(Code.INVALID_ARGUMENT, `${field}: ${(err as Error).message}`);
  }
  return digest;
}

export function digestToPb(d: Digest): re.Digest {
  return { hash: d.hash, sizeBytes: d.sizeBytes };
}

export function platformFromPb(p: re.Platform | undefined): Platform | undefined {
  return p ? { properties: p.properties.map((x) => ({ name: x.name, value: x.value })) } : undefined;
}

export function platformToPb(p: Platform | undefined): re.Platform | undefined {
  return p ? { properties: p.properties.map((x) => ({ name: x.name, value: x.value })) } : undefined;
}

export function actionFromPb(a: re.Action): Action {
  const timeoutMs = a.timeout ? Number(a.timeout.seconds) * 1000 + Math.floor(a.timeout.nanos / 1e6) : undefined;
  return {
    commandDigest: digestFromPb(a.commandDigest, 'action.command_digest'),
    inputRootDigest: digestFromPb(a.inputRootDigest, 'action.input_root_digest'),
    timeoutMs: timeoutMs && timeoutMs > 0 ? timeoutMs : undefined,
    doNotCache: a.doNotCache,
    salt: a.salt.length > 0 ? Buffer.from(a.salt) : undefined,
    platform: platformFromPb(a.platform),
  };
}

export function actionToPb(a: Action): re.Action {
  return {
    commandDigest: digestToPb(a.commandDigest),
    inputRootDigest: digestToPb(a.inputRootDigest),
    timeout: a.timeoutMs ? { seconds: Math.floor(a.timeoutMs / 1000), nanos: (a.timeoutMs % 1000) * 1e6 } : undefined,
    doNotCache: a.doNotCache,
    salt: a.salt ?? Buffer.alloc(0),
    platform: platformToPb(a.platform),
  };
}

export function commandFromPb(c: re.Command): Command {
  return {
    arguments: [...c.arguments],
    environmentVariables: c.environmentVariables.map((v) => ({ name: v.name, value: v.value })),
    outputPaths: [...c.outputPaths],
    outputFiles: [...c.outputFiles],
    outputDirectories: [...c.outputDirectories],
    workingDirectory: c.workingDirectory,
    platform: platformFromPb(c.platform),
  };
}

export function commandToPb(c: Command): re.Command {
  return {
    arguments: c.arguments,
    environmentVariables: c.environmentVariables,
    outputFiles: c.outputFiles,
    outputDirectories: c.outputDirectories,
    platform: platformToPb(c.platform),
    workingDirectory: c.workingDirectory,
    outputPaths: c.outputPaths,
    outputNodeProperties: [],
    outputDirectoryFormat: 0,
  };
}

const ts = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms));
const ms = (d: Date | undefined) => (d ? d.getTime() : undefined);

function metadataToPb(m: ExecutionMetadata | undefined): re.ExecutedActionMetadata | undefined {
  if (!m) return undefined;
  return {
    worker: m.worker,
    queuedTimestamp: ts(m.queuedMs),
    workerStartTimestamp: ts(m.workerStartMs),
    workerCompletedTimestamp: ts(m.workerCompletedMs),
    inputFetchStartTimestamp: ts(m.inputFetchStartMs),
    inputFetchCompletedTimestamp: ts(m.inputFetchCompletedMs),
    executionStartTimestamp: ts(m.executionStartMs),
    executionCompletedTimestamp: ts(m.executionCompletedMs),
    outputUploadStartTimestamp: ts(m.outputUploadStartMs),
    outputUploadCompletedTimestamp: ts(m.outputUploadCompletedMs),
    auxiliaryMetadata: [],
    virtualExecutionDuration: undefined,
  };
}

function metadataFromPb(m: re.ExecutedActionMetadata | undefined): ExecutionMetadata | undefined {
  if (!m) return undefined;
  return {
    worker: m.worker,
    queuedMs: ms(m.queuedTimestamp),
    workerStartMs: ms(m.workerStartTimestamp),
    workerCompletedMs: ms(m.workerCompletedTimestamp),
    inputFetchStartMs: ms(m.inputFetchStartTimestamp),
    inputFetchCompletedMs: ms(m.inputFetchCompletedTimestamp),
    executionStartMs: ms(m.executionStartTimestamp),
    executionCompletedMs: ms(m.executionCompletedTimestamp),
    outputUploadStartMs: ms(m.outputUploadStartTimestamp),
    outputUploadCompletedMs: ms(m.outputUploadCompletedTimestamp),
  };
}

export function actionResultToPb(r: ActionResult): re.ActionResult {
  return {
    outputFiles: r.outputFiles.map((f) => ({ path: f.path, digest: digestToPb(f.digest), isExecutable: f.isExecutable, contents: Buffer.alloc(0), nodeProperties: undefined })),
    outputDirectories: r.outputDirectories.map((d) => ({ path: d.path, treeDigest: digestToPb(d.treeDigest), isTopologicallySorted: false, rootDirectoryDigest: undefined })),
    exitCode: r.exitCode,
    stdoutRaw: r.stdoutRaw ?? Buffer.alloc(0),
    stdoutDigest: r.stdoutDigest ? digestToPb(r.stdoutDigest) : undefined,
    stderrRaw: r.stderrRaw ?? Buffer.alloc(0),
    stderrDigest: r.stderrDigest ? digestToPb(r.stderrDigest) : undefined,
    executionMetadata: metadataToPb(r.executionMetadata),
    outputFileSymlinks: [],
    outputDirectorySymlinks: [],
    outputSymlinks: r.outputSymlinks.map((s) => ({ path: s.path, target: s.target, nodeProperties: undefined })),
  };
}

export function actionResultFromPb(r: re.ActionResult): ActionResult {
  return {
    outputFiles: r.outputFiles.map((f, i) => ({ path: f.path, digest: digestFromPb(f.digest, `output_files[${i}].digest`), isExecutable: f.isExecutable })),
    outputDirectories: r.outputDirectories.map((d, i) => ({ path: d.path, treeDigest: digestFromPb(d.treeDigest, `output_directories[${i}].tree_digest`) })),
    outputSymlinks: [...r.outputSymlinks, ...r.outputFileSymlinks, ...r.outputDirectorySymlinks].map((s) => ({ path: s.path, target: s.target })),
    exitCode: r.exitCode,
    stdoutRaw: r.stdoutRaw.length > 0 ? Buffer.from(r.stdoutRaw) : undefined,
    stdoutDigest: r.stdoutDigest ? digestFromPb(r.stdoutDigest, 'stdout_digest') : undefined,
    stderrRaw: r.stderrRaw.length > 0 ? Buffer.from(r.stderrRaw) : undefined,
    stderrDigest: r.stderrDigest ? digestFromPb(r.stderrDigest, 'stderr_digest') : undefined,
    executionMetadata: metadataFromPb(r.executionMetadata),
  };
}

const PRECONDITION_FAILURE_TYPE = 'type.googleapis.com/google.rpc.PreconditionFailure';

/** Orion's PreconditionFailure violation type for a node whose tool is not the one the key names (subject: the client's path). */
const TOOLCHAIN_VIOLATION = 'ORION_TOOLCHAIN';

/**
 * google.rpc.Status for an error; missing blobs become a PreconditionFailure detail (REAPI's MISSING
 * violations), and so does a node's toolchain refusal (TOOLCHAIN_VIOLATION).
 */
export function statusToPb(code: number, message: string, missing?: MissingBlob[], toolchain?: string): PbStatus {
  const details: Any[] = [];
  const violations = (missing ?? []).map((m) => ({ type: 'MISSING', subject: `blobs/${m.hash}/${m.sizeBytes}`, description: '' }));
  if (toolchain !== undefined) violations.push({ type: TOOLCHAIN_VIOLATION, subject: toolchain, description: '' });
  if (violations.length > 0) details.push({ typeUrl: PRECONDITION_FAILURE_TYPE, value: Buffer.from(PreconditionFailure.encode({ violations }).finish()) });
  return { code, message, details };
}

/** What a status's PreconditionFailure details list: missing blobs, and a node's toolchain refusal (the client's tool path). */
function preconditionsOf(s: PbStatus | undefined): { missing: MissingBlob[]; toolchain?: string } {
  const missing: MissingBlob[] = [];
  let toolchain: string | undefined;
  for (const d of s?.details ?? []) {
    if (d.typeUrl !== PRECONDITION_FAILURE_TYPE) continue;
    for (const v of PreconditionFailure.decode(d.value).violations) {
      const m = /^blobs\/([0-9a-f]{64})\/(\d+)$/.exec(v.subject);
      if (v.type === 'MISSING' && m) missing.push({ hash: m[1]!, sizeBytes: Number(m[2]) });
      else if (v.type === TOOLCHAIN_VIOLATION) toolchain = v.subject;
    }
  }
  return { missing, toolchain };
}

/** The missing blobs listed in a status's PreconditionFailure detail. */
export function missingFromStatus(s: PbStatus | undefined): MissingBlob[] {
  return preconditionsOf(s).missing;
}

export function errorFromStatus(s: PbStatus | undefined, context: string): OrionError | undefined {
  if (!s || s.code === 0) return undefined;
  return new OrionError(s.code as Code, `${context}: ${s.message}`, preconditionsOf(s));
}
