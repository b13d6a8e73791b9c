/** The orion.v1 Builds service: protobuf at the edge, head/dag-build.ts inside. */
import { BuildEvent_Kind, type BuildEvent, type BuildRequest, type BuildsServer, type ClientActionReport as ClientActionReportPb, type PrefetchRequest } from '../proto/gen/orion/v1/build.js';
import type { TreePrefetch } from './tree-prefetch.js';
import { EMPTY_DIGEST } from '../cas/digest.js';
import type { DagActionSpec } from './dag-build.js';
import { callerOf, type Principal } from './auth.js';
import type { DagAction } from '../proto/gen/orion/v1/build.js';
import { actionResultToPb, digestFromPb, digestToPb, platformFromPb, statusToPb } from '../proto/convert.js';
import { serverStream, unary } from '../proto/grpc-status.js';
import { Code, OrionError } from '../common/errors.js';
import type { DagBuildRequest, DagBuilds, DagEvent, DagEventKind } from './dag-build.js';

const KIND: Record<DagEventKind, BuildEvent_Kind> = {
  accepted: BuildEvent_Kind.ACCEPTED,
  queued: BuildEvent_Kind.QUEUED,
  started: BuildEvent_Kind.STARTED,
  'cache-hit': BuildEvent_Kind.CACHE_HIT,
  finished: BuildEvent_Kind.FINISHED,
  failed: BuildEvent_Kind.FAILED,
  retried: BuildEvent_Kind.RETRIED,
  skipped: BuildEvent_Kind.SKIPPED,
  'run-on-client': BuildEvent_Kind.RUN_ON_CLIENT,
  'build-finished': BuildEvent_Kind.BUILD_FINISHED,
};

export function dagRequestFromPb(req: BuildRequest): DagBuildRequest {
  if (req.buildId.length > 200) throw new OrionError(Code.INVALID_ARGUMENT, 'build_id is longer than 200 characters');
  return {
    instanceName: req.instanceName,
    buildId: req.buildId,
    sourceRoot: digestFromPb(req.sourceRoot, 'source_root'),
    keepGoing: req.keepGoing,
    skipCacheLookup: req.skipCacheLookup,
    actions: req.actions.map((a, i) => dagActionFromPb(a, `actions[${i}]`)),
  };
}

function dagActionFromPb(a: DagAction, where: string): DagActionSpec {
      const timeoutMs = a.timeout ? Number(a.timeout.seconds) * 1000 + Math.floor(a.timeout.nanos / 1e6) : 0;
      if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw new OrionError(Code.INVALID_ARGUMENT, `${where}.timeout must not be negative`);
      const optional = a.client;
      return {
        id: a.id,
        client: a.client,
        commandDigest: optional && !a.commandDigest ? EMPTY_DIGEST : digestFromPb(a.commandDigest, `${where}.command_digest`),
        inputRootDigest: optional && !a.inputRootDigest ? EMPTY_DIGEST : digestFromPb(a.inputRootDigest, `${where}.input_root_digest`),
        producedInputs: a.producedInputs.map((p) => ({ path: p.path, producer: p.producer })),
        deps: a.deps,
        timeoutMs: timeoutMs > 0 ? timeoutMs : undefined,
        doNotCache: a.doNotCache,
        platform: platformFromPb(a.platform),
        depfile: a.depfile || undefined,
        label: a.label.slice(0, 500) || undefined,
        estimatedMs: a.estimatedMs > 0 ? a.estimatedMs : undefined,
        decideAfter: a.skippable ? a.decideAfter : undefined,
      };
}

export function dagEventToPb(ev: DagEvent): BuildEvent {
  return {
    kind: KIND[ev.kind],
    buildId: ev.buildId,
    actionId: ev.actionId ?? '',
    nodeId: ev.nodeId ?? '',
    attempt: ev.attempt ?? 0,
    actionDigest: ev.actionDigest ? digestToPb(ev.actionDigest) : undefined,
    result: ev.result ? actionResultToPb(ev.result) : undefined,
    status: ev.status ? statusToPb(ev.status.code, ev.status.message, ev.status.missing) : undefined,
    message: ev.message ?? '',
    summary: ev.summary,
  };
}

/** The identity that owns a build it submits (undefined without authentication). */
const identityOf = (p: Principal | undefined) => (p && p.role !== 'anonymous' ? p.identity : undefined);
/** Whom a caller acts as on an existing build: admins (and everyone without authentication) on any. */
const actingAs = (p: Principal | undefined) => (p && p.role !== 'anonymous' && p.role !== 'admin' ? p.identity : undefined);

export function createBuildService(builds: DagBuilds, trees: TreePrefetch): BuildsServer {
  return {
    build: serverStream(async (req: BuildRequest, call) => {
      const request = { ...dagRequestFromPb(req), owner: identityOf(callerOf(call.metadata)) };
      const abort = new AbortController();
      call.on('cancelled', () => abort.abort());
      await builds.run(
        request,
        (ev) => {
          if (!call.cancelled) call.write(dagEventToPb(ev));
        },
        abort.signal,
      );
    }),
    cancelBuild: unary(async (req, call) => ({ cancelled: builds.cancel(req.buildId, 'CancelBuild', actingAs(callerOf(call.metadata))) })),
    reportClientAction: unary(async (req: ClientActionReportPb, call) => {
      await builds.reportClientAction({
        buildId: req.buildId,
        actionId: req.actionId,
        exitCode: req.exitCode,
        written: req.written.map((f, i) => ({ path: f.path, digest: digestFromPb(f.digest, `written[${i}].digest`), isExecutable: f.isExecutable })),
        deleted: req.deleted,
        rekeyed: req.rekeyed.map((a, i) => dagActionFromPb(a, `rekeyed[${i}]`)),
        message: req.message.slice(0, 10_000) || undefined,
        upToDate: req.upToDate ? { decidedAfter: req.decidedAfter } : undefined,
      }, actingAs(callerOf(call.metadata)));
      return {};
    }),
    prefetch: unary(async (req: PrefetchRequest) => {
      if (req.buildId.length > 200) throw new OrionError(Code.INVALID_ARGUMENT, 'build_id is longer than 200 characters');
      return { nodes: await trees.prefetch(digestFromPb(req.sourceRoot, 'source_root'), req.buildId || undefined, req.parallelism) };
    }),
  };
}
