import { describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { digestOf } from '../../cas/digest.js';
import { missingFromStatus } from '../../proto/convert.js';
import { BuildEvent_Kind, BuildRequest, DagAction } from '../../proto/gen/orion/v1/build.js';
import { dagEventToPb, dagRequestFromPb } from '../../head/build-service.js';
import type { DagEventKind } from '../../head/dag-build.js';

const root = digestOf(Buffer.from('root'));
const command = digestOf(Buffer.from('command'));

function request(action: Partial<DagAction> = {}, more: Partial<BuildRequest> = {}): BuildRequest {
  return BuildRequest.fromPartial({ instanceName: 'main', buildId: 'b1', sourceRoot: root, keepGoing: true, actions: [{ id: 'a', commandDigest: command, inputRootDigest: root, ...action }], ...more });
}

function refusal(fn: () => unknown): OrionError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(OrionError);
    return err as OrionError;
  }
  throw new Error('expected an error');
}

describe('Builds service edge: requests', () => {
  it('converts a request to domain terms, timeouts to milliseconds and empty fields to absent', () => {
    const req = dagRequestFromPb(
      request({
        timeout: { seconds: 2, nanos: 500_000_000 },
        producedInputs: [{ path: 'x.o', producer: 'x' }],
        deps: ['y'],
        platform: { properties: [{ name: 'orion-mount-path', value: '/src' }] },
        depfile: 'a.d',
        label: 'CC a.o',
        estimatedMs: 1970,
      }),
    );
    expect(req).toMatchObject({ instanceName: 'main', buildId: 'b1', sourceRoot: root, keepGoing: true, skipCacheLookup: false });
    expect(req.actions[0]).toMatchObject({
      id: 'a',
      commandDigest: command,
      inputRootDigest: root,
      producedInputs: [{ path: 'x.o', producer: 'x' }],
      deps: ['y'],
      timeoutMs: 2500,
      doNotCache: false,
      platform: { properties: [{ name: 'orion-mount-path', value: '/src' }] },
      depfile: 'a.d',
      label: 'CC a.o',
      estimatedMs: 1970,
    });
    const bare = dagRequestFromPb(request()).actions[0]!;
    expect([bare.timeoutMs, bare.depfile, bare.label, bare.platform, bare.estimatedMs]).toEqual([undefined, undefined, undefined, undefined, undefined]);
  });

  it('keeps at most 500 characters of a label', () => {
    expect(dagRequestFromPb(request({ label: 'x'.repeat(2000) })).actions[0]!.label).toHaveLength(500);
  });

  it('refuses a missing source root or command digest, a negative timeout and an overlong build id with INVALID_ARGUMENT', () => {
    const cases: [() => unknown, string][] = [
      [() => dagRequestFromPb(request({}, { sourceRoot: undefined })), 'source_root is missing'],
      [() => dagRequestFromPb(request({ commandDigest: undefined })), 'actions[0].command_digest is missing'],
      [() => dagRequestFromPb(request({ timeout: { seconds: -1, nanos: 0 } })), 'actions[0].timeout must not be negative'],
      [() => dagRequestFromPb(request({}, { buildId: 'b'.repeat(201) })), 'build_id is longer than 200 characters'],
    ];
    for (const [fn, message] of cases) {
      const err = refusal(fn);
      expect([err.code, err.message]).toEqual([Code.INVALID_ARGUMENT, message]);
    }
  });
});

describe('Builds service edge: events', () => {
  it('maps every event kind to its protobuf value', () => {
    const kinds: [DagEventKind, BuildEvent_Kind][] = [
      ['accepted', BuildEvent_Kind.ACCEPTED],
      ['queued', BuildEvent_Kind.QUEUED],
      ['started', BuildEvent_Kind.STARTED],
      ['cache-hit', BuildEvent_Kind.CACHE_HIT],
      ['finished', BuildEvent_Kind.FINISHED],
      ['failed', BuildEvent_Kind.FAILED],
      ['retried', BuildEvent_Kind.RETRIED],
      ['skipped', BuildEvent_Kind.SKIPPED],
      ['build-finished', BuildEvent_Kind.BUILD_FINISHED],
    ];
    for (const [kind, pb] of kinds) expect(dagEventToPb({ kind, buildId: 'b1' }).kind).toBe(pb);
  });

  it('carries the result, the status with its missing blobs, and the summary', () => {
    const out = digestOf(Buffer.from('a.o'));
    const ev = dagEventToPb({
      kind: 'failed',
      buildId: 'b1',
      actionId: 'a',
      nodeId: 'n1',
      attempt: 2,
      actionDigest: command,
      result: { outputFiles: [{ path: 'a.o', digest: out, isExecutable: false }], outputSymlinks: [], outputDirectories: [], exitCode: 1 },
      status: { code: Code.FAILED_PRECONDITION, message: 'gone', missing: [out] },
      message: 'exit code 1',
    });
    expect(ev).toMatchObject({ buildId: 'b1', actionId: 'a', nodeId: 'n1', attempt: 2, actionDigest: command, message: 'exit code 1' });
    expect(ev.result!.exitCode).toBe(1);
    expect(ev.result!.outputFiles.map((f) => [f.path, f.digest])).toEqual([['a.o', out]]);
    expect([ev.status!.code, ev.status!.message]).toEqual([Code.FAILED_PRECONDITION, 'gone']);
    expect(missingFromStatus(ev.status)).toEqual([out]);
    const summary = { ok: false, total: 3, executed: 1, cacheHits: 1, failed: 1, skipped: 0, peerBytes: 10, headBytes: 20, wallMs: 30 };
    expect(dagEventToPb({ kind: 'build-finished', buildId: 'b1', summary }).summary).toEqual(summary);
    expect(dagEventToPb({ kind: 'accepted', buildId: 'b1' })).toMatchObject({ actionId: '', nodeId: '', attempt: 0, message: '', actionDigest: undefined, result: undefined, status: undefined, summary: undefined });
  });
});
