/**
 * What the head knows about builds: each Execute (and each action-cache lookup)
 * from a client that named its build is recorded under that build, and followed
 * through the scheduler until it completes. Feeds `orion status --builds`, the
 * dashboard's JSON API and its server-sent events.
 */
import type { Clock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import type { Digest } from '../cas/types.js';
import type { RequestInfo } from './request-info.js';
import type { Execution, Scheduler } from './scheduler.js';

export type ActionState = 'queued' | 'running' | 'cached' | 'done' | 'failed';

export interface TrackedAction {
  /** The client's action id, or the operation name when it sent none. */
  id: string;
  label: string;
  deps: string[];
  actionDigest: string;
  state: ActionState;
  nodeId?: string;
  operation?: string;
  queuedAt: number;
  startedAt?: number;
  endedAt?: number;
  exitCode?: number;
  message?: string;
}

export interface BuildView {
  id: string;
  startedAt: number;
  lastActivity: number;
  inProgress: boolean;
  counts: Record<ActionState, number>;
  total: number;
}

export interface BuildDetail extends BuildView {
  actions: TrackedAction[];
}

export type BuildEvent = { type: 'action'; buildId: string; action: TrackedAction } | { type: 'build'; build: BuildView };

export interface BuildTracker {
  /** An Execute created or joined `e`; follow it (and record it under the caller's build, if named). */
  execution(e: Execution, info: RequestInfo | undefined): void;
  /** An action-cache lookup by a client that named its build: a hit is an action served from the cache. */
  lookup(info: RequestInfo, actionDigest: Digest, hit: boolean): void;
  list(includeFinished?: boolean): BuildView[];
  get(buildId: string): BuildDetail | undefined;
  /** Every change, as it happens. Returns an unsubscribe. */
  subscribe(fn: (ev: BuildEvent) => void): () => void;
}

export interface BuildTrackerDeps {
  scheduler: Scheduler;
  clock: Clock;
  log: Logger;
  /** Called once per execution that ran on a node (not cache hits), when it completes. */
  onExecuted?(durationMs: number, state: 'done' | 'failed', nodeId: string | undefined): void;
  /** A build with nothing queued or running counts as in progress for this long after its last activity. */
  idleMs?: number;
  /** How many builds to remember. */
  maxBuilds?: number;
  maxActionsPerBuild?: number;
}

interface Build {
  id: string;
  startedAt: number;
  lastActivity: number;
  actions: Map<string, TrackedAction>;
  /** Kept up to date on every change, so a view costs nothing however big the build. */
  counts: Record<ActionState, number>;
}

const STATES: ActionState[] = ['queued', 'running', 'cached', 'done', 'failed'];

export function createBuildTracker(deps: BuildTrackerDeps): BuildTracker {
  const builds = new Map<string, Build>();
  const listeners = new Set<(ev: BuildEvent) => void>();
  const idleMs = deps.idleMs ?? 60_000;
  const maxBuilds = deps.maxBuilds ?? 50;
  const maxActions = deps.maxActionsPerBuild ?? 50_000;

  function emit(ev: BuildEvent) {
    for (const fn of [...listeners]) {
      try {
        fn(ev);
      } catch (err) {
        deps.log.warn({ err: (err as Error).message }, 'build event listener failed');
      }
    }
  }

  function view(b: Build): BuildView {
    const counts = { ...b.counts };
    const busy = counts.queued + counts.running > 0;
    return { id: b.id, startedAt: b.startedAt, lastActivity: b.lastActivity, inProgress: busy || deps.clock.now() - b.lastActivity < idleMs, counts, total: b.actions.size };
  }

  function buildOf(id: string): Build {
    let b = builds.get(id);
    if (!b) {
      const now = deps.clock.now();
      b = { id, startedAt: now, lastActivity: now, actions: new Map(), counts: Object.fromEntries(STATES.map((s) => [s, 0])) as Record<ActionState, number> };
      builds.set(id, b);
      while (builds.size > maxBuilds) builds.delete(builds.keys().next().value!);
      deps.log.info({ buildId: id }, 'build started');
    }
    return b;
  }

  function update(b: Build, a: TrackedAction) {
    b.lastActivity = deps.clock.now();
    const before = b.actions.get(a.id);
    if (!before && b.actions.size >= maxActions) return;
    if (before) b.counts[before.state]--;
    b.counts[a.state]++;
    b.actions.set(a.id, a);
    emit({ type: 'action', buildId: b.id, action: { ...a } });
    emit({ type: 'build', build: view(b) });
  }

  const digestText = (d: Digest) => `${d.hash}/${d.sizeBytes}`;

  return {
    execution(e, info) {
      const b = info ? buildOf(info.buildId) : undefined;
      const id = info?.actionId ?? e.name;
      const action: TrackedAction = {
        id,
        label: info?.label ?? e.request.command.arguments.slice(0, 3).join(' '),
        deps: info?.deps ?? [],
        actionDigest: digestText(e.request.actionDigest),
        state: 'queued',
        operation: e.name,
        queuedAt: deps.clock.now(),
      };
      let last: string | undefined;
      let counted = false;
      let unsubscribe: (() => void) | undefined;
      let done = false;
      unsubscribe = deps.scheduler.watch(e.name, (ex) => {
        if (done) return;
        const attempt = ex.attempts.at(-1);
        let state: ActionState;
        if (ex.stage === 'queued') state = 'queued';
        else if (ex.stage === 'executing') state = 'running';
        else {
          const r = ex.response;
          state = r?.cachedResult ? 'cached' : r && r.status.code === 0 && r.result?.exitCode === 0 ? 'done' : 'failed';
          action.exitCode = r?.result?.exitCode;
          if (r && r.status.code !== 0) action.message = r.status.message;
          action.endedAt = deps.clock.now();
        }
        action.state = state;
        action.nodeId = state === 'cached' || state === 'queued' ? undefined : attempt?.nodeId;
        if (state === 'running') action.startedAt = attempt?.startedAt ?? deps.clock.now();
        const key = `${state}/${action.nodeId ?? ''}`;
        if (key === last) return;
        last = key;
        if (b) update(b, { ...action });
        if (ex.stage === 'completed') {
          done = true;
          unsubscribe?.();
          // No child logger per action: creating two per action was ~5% of the head's CPU at scale.
          if (deps.log.isLevelEnabled('debug')) {
            deps.log.debug({ buildId: info?.buildId, actionDigest: e.request.actionDigest.hash, operation: e.name, nodeId: action.nodeId, state, exitCode: action.exitCode, label: action.label }, 'action finished');
          }
          if (!counted && attempt?.endedAt !== undefined && state !== 'cached') {
            counted = true;
            deps.onExecuted?.(attempt.endedAt - attempt.startedAt, state === 'done' ? 'done' : 'failed', attempt.nodeId);
          }
        }
      });
      if (done) unsubscribe();
    },
    lookup(info, actionDigest, hit) {
      if (!hit) return;
      const b = buildOf(info.buildId);
      const now = deps.clock.now();
      const id = info.actionId ?? `ac:${actionDigest.hash}`;
      update(b, { id, label: info.label ?? id, deps: info.deps, actionDigest: digestText(actionDigest), state: 'cached', queuedAt: now, endedAt: now });
    },
    list(includeFinished = false) {
      const all = [...builds.values()].map(view);
      return (includeFinished ? all : all.filter((b) => b.inProgress)).sort((x, y) => x.startedAt - y.startedAt);
    },
    get(id) {
      const b = builds.get(id);
      if (!b) return undefined;
      return { ...view(b), actions: [...b.actions.values()].map((a) => ({ ...a })) };
    },
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}
