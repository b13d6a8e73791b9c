// Synthetic scale benchmark of the Orion head, through the orion.v1 Builds service (whole-DAG submission).
//
//   node bench/scale.mjs sleep    [--actions 2000] [--nodes 6] [--slots 4] [--seed 1] [--warmup 1] [--time-scale 1] [--action sleep|write] [--sandbox off|auto]
//   node bench/scale.mjs dispatch [--actions 10000] [--nodes 4] [--slots 8] [--shape flat|fanin] [--workers orion|fake] [--sandbox off|auto]
//   node bench/scale.mjs plan     [--actions 2000] [--nodes 6] [--slots 4] [--seed 1]     (no daemons: the DAG and its bounds)
// Common: [--timeout 1800] [--cpu-prof DIR] (CPU profiles of the head, and of the nodes with --cpu-prof-nodes 1)
// Environment: BENCH_TMP (where the run's scratch directory goes), BENCH_TRASH (move it there at the end
// instead of deleting it, for the caller to delete after its last run; see discardScratch),
// SCALE_NODE_FLAGS and SCALE_HEAD_FLAGS (more `orion node` / `orion head` flags, for experiments and A/B pairs).
//
// Starts a fresh head (own data dir) and K `orion node` processes (--no-peer; --no-sandbox unless
// --sandbox auto) on 127.0.0.1, submits one DAG through Builds.Build, waits for BUILD_FINISHED and
// prints one JSON object on stdout.
//
// sleep: a seeded synthetic C/C++-shaped DAG (generators -> compiles in libraries -> one archive per
//   library (fan-in 60-300) -> tool links (a few objects and several archives each) and test links
//   (one object, 1-3 archives) -> one packaging step over every link). --action sleep (the default):
//   each action is `sleep S`, run directly, and waits for its producers through the DAG's edges;
//   --action write: `sh -c 'sleep S; ... > OUT'` writes its declared output, and consumers read
//   their producers' outputs as produced inputs (what a real build adds on a node: a shell, an
//   output to collect and upload, inputs made elsewhere to fetch). The
//   salt that makes every action key new is a file of the source root (read by every action), so
//   command digests stay the same across builds: --warmup W first runs W builds of the same DAG
//   with other salts, from which the head learns durations (its critical-path priority uses them);
//   the first of those is reported as `coldHead` (a head that never saw the build).
//   efficiency = ideal / measured, ideal = max(critical path, total sleep / (K * S)) (a lower bound
//   for any scheduler); measured = submit to BUILD_FINISHED. `simulated*` are zero-overhead list
//   schedules of the same DAG on K * S slots (by exact remaining critical path, and by hop count,
//   which is what a head without measured durations can do): the best to expect of this DAG.
//   --time-scale F multiplies every sleep by F (the same DAG with F times less per-action
//   overhead relative to the work: tells scheduling losses from per-action costs).
// dispatch: N no-op actions (`true SALT-i`, empty input root), independent (flat) or in groups of
//   100 gathered by one more no-op each (fanin): actions/second from submit to BUILD_FINISHED, and
//   the head's peak RSS (VmHWM). --workers fake replaces the `orion node` processes by K fake nodes
//   in one separate process, speaking the Worker protocol and reporting every assignment done at
//   once (exit 0, no outputs): the head's own dispatch throughput, without any node-side cost.
// Every daemon it starts is killed before it exits (and on SIGINT/SIGTERM/errors), by pid.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { makeOwnDirs } from './own-dirs.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ORION = path.join(REPO, 'dist/orion.mjs');

function parseArgs(argv) {
  const mode = argv[0];
  const o = { mode, actions: 0, nodes: 0, slots: 0, seed: 1, 'time-scale': 1, warmup: 1, action: 'sleep', shape: 'flat', workers: 'orion', sandbox: 'off', timeout: 1800, 'cpu-prof': '', 'cpu-prof-nodes': 0, head: '' };
  for (let i = 1; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    const v = argv[i + 1];
    if (!(k in o) || k === 'mode' || v === undefined) throw new Error(`unknown option or missing value: ${argv[i]}`);
    o[k] = typeof o[k] === 'number' ? Number(v) : v;
    if (typeof o[k] === 'number' && !Number.isFinite(o[k])) throw new Error(`--${k} needs a number`);
  }
  if (!['dispatch', 'sleep', 'plan', 'fake-nodes'].includes(mode)) throw new Error('mode must be sleep, dispatch or plan');
  if (!['orion', 'fake'].includes(o.workers)) throw new Error('--workers is orion or fake');
  if (o.workers === 'fake' && mode !== 'dispatch') throw new Error('--workers fake is for dispatch mode');
  if (!['off', 'auto'].includes(o.sandbox)) throw new Error('--sandbox is off or auto');
  if (!['flat', 'fanin'].includes(o.shape)) throw new Error('--shape is flat or fanin');
  if (!['sleep', 'write'].includes(o.action)) throw new Error('--action is sleep or write');
  const dispatch = mode === 'dispatch';
  o.actions ||= dispatch ? 10000 : 2000;
  o.nodes ||= dispatch ? 4 : 6;
  o.slots ||= dispatch ? 8 : 4;
  if (dispatch) o.warmup = 0;
  return o;
}

// ---------- the synthetic DAG ----------

/** Seeded PRNG (mulberry32): the same --seed gives the same DAG and sleeps. */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A C/C++-shaped build of exactly `total` actions, in topological order. Each is
 * { id, kind, out, sleep (s), inputs (producer actions, whose `out` it reads) }.
 * Sleeps (seconds): generators 0.5-1.5; compiles 0.2-0.6; archives 0.4 + 4 ms per object;
 * the main tool's link 8-10 (it links 3 of the 10 libraries), other tool links 1.5-4,
 * test links 0.4-1.2; packaging 0.3-0.5.
 */
function cppDag(total, seed) {
  const rand = mulberry32(seed);
  const u = (lo, hi) => Math.round((lo + (hi - lo) * rand()) * 1000) / 1000;
  const pick = (arr, k) => {
    const a = [...arr];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a.slice(0, k);
  };
  const actions = [];
  const add = (kind, id, out, sleep, inputs) => {
    const a = { id, kind, out, sleep, inputs };
    actions.push(a);
    return a;
  };
  const gens = total >= 500 ? 4 : 2;
  const libs = Math.max(2, Math.min(10, Math.round(total / 180)));
  const tools = Math.max(1, Math.min(8, Math.round(total / 250)));
  const tests = Math.round(total * 0.055);
  const toolObjs = Array.from({ length: tools }, () => 2 + Math.floor(rand() * 5));
  const compiles = total - gens - libs - tools - toolObjs.reduce((x, y) => x + y, 0) - 2 * tests - 1;
  if (compiles < 5 * libs) throw new Error(`--actions ${total} is too small for this DAG's shape (at least 100)`);
  const G = [];
  for (let i = 0; i < gens; i++) G.push(add('generate', `gen${i}`, `gen/g${i}.h`, u(0.5, 1.5), []));
  // Library sizes: random weights over the compile budget (60-300 objects each at 2,000 actions).
  const weights = Array.from({ length: libs }, () => 0.3 + 0.7 * rand());
  const wsum = weights.reduce((x, y) => x + y, 0);
  const sizes = weights.map((w) => Math.max(1, Math.floor((w / wsum) * compiles)));
  sizes[0] += compiles - sizes.reduce((x, y) => x + y, 0);
  const archives = [];
  for (let l = 0; l < libs; l++) {
    // The first 60% of the libraries include a generated header.
    const usesGen = l < Math.ceil(libs * 0.6) ? [G[l % gens]] : [];
    const objs = [];
    for (let i = 0; i < sizes[l]; i++) objs.push(add('compile', `lib${l}/c${i}`, `out/lib${l}/f${i}.o`, u(0.2, 0.6), usesGen));
    archives.push(add('archive', `lib${l}/ar`, `out/lib/lib${l}.a`, Math.round((0.4 + 0.004 * sizes[l]) * 1000) / 1000, objs));
  }
  const links = [];
  for (let t = 0; t < tools; t++) {
    const objs = [];
    for (let i = 0; i < toolObjs[t]; i++) objs.push(add('compile', `tool${t}/c${i}`, `out/tool${t}/m${i}.o`, u(0.2, 0.6), t === 0 ? [G[0]] : []));
    const arch = t === 0 ? pick(archives, Math.ceil(libs * 0.3)) : pick(archives, 2 + Math.floor(rand() * 3));
    links.push(add('link', `tool${t}/link`, `out/bin/tool${t}`, t === 0 ? u(8, 10) : u(1.5, 4), [...objs, ...arch]));
  }
  for (let t = 0; t < tests; t++) {
    const obj = add('compile', `test${t}/c`, `out/test/t${t}.o`, u(0.2, 0.6), []);
    links.push(add('link', `test${t}/link`, `out/test/t${t}`, u(0.4, 1.2), [obj, ...pick(archives, 1 + Math.floor(rand() * 3))]));
  }
  add('package', 'package', 'out/package.tar', u(0.3, 0.5), links);
  return actions;
}

function scaled(actions) {
  if (opts['time-scale'] !== 1) for (const a of actions) a.sleep = Math.round(a.sleep * opts['time-scale'] * 1000) / 1000;
  return actions;
}

/** No-op actions: independent, or groups of 100 each gathered by one more action. */
function noopDag(total, shape) {
  const actions = [];
  if (shape === 'flat') {
    for (let i = 0; i < total; i++) actions.push({ id: `a${i}`, kind: 'noop', sleep: 0, inputs: [] });
    return actions;
  }
  let group = [];
  for (let i = 0; actions.length < total; i++) {
    if (group.length === 100 || actions.length === total - 1) {
      actions.push({ id: `g${i}`, kind: 'gather', sleep: 0, inputs: group });
      group = [];
    } else {
      const a = { id: `a${i}`, kind: 'noop', sleep: 0, inputs: [] };
      actions.push(a);
      group.push(a);
    }
  }
  return actions;
}

/** Dependents, remaining critical path (s) and remaining hop count of every action. */
function analyse(actions) {
  const dependents = new Map(actions.map((a) => [a, []]));
  for (const a of actions) for (const p of a.inputs) dependents.get(p).push(a);
  const remaining = new Map();
  const hops = new Map();
  for (let i = actions.length - 1; i >= 0; i--) {
    const a = actions[i];
    let r = 0;
    let h = 0;
    for (const d of dependents.get(a)) {
      r = Math.max(r, remaining.get(d));
      h = Math.max(h, hops.get(d));
    }
    remaining.set(a, a.sleep + r);
    hops.set(a, 1 + h);
  }
  let criticalPath = 0;
  for (const r of remaining.values()) criticalPath = Math.max(criticalPath, r);
  return { dependents, remaining, hops, criticalPath, totalWork: actions.reduce((s, a) => s + a.sleep, 0) };
}

/** Makespan (s) of a zero-overhead list schedule on `slots` slots: highest `priority` first, then DAG order. */
function simulate(actions, dependents, slots, priority) {
  const waiting = new Map(actions.map((a) => [a, a.inputs.length]));
  const order = new Map(actions.map((a, i) => [a, i]));
  const cmp = (x, y) => priority.get(y) - priority.get(x) || order.get(x) - order.get(y);
  let ready = actions.filter((a) => a.inputs.length === 0);
  const running = [];
  let now = 0;
  let free = slots;
  let done = 0;
  while (done < actions.length) {
    ready.sort(cmp);
    while (free > 0 && ready.length > 0) {
      const a = ready.shift();
      running.push([now + a.sleep, a]);
      free--;
    }
    running.sort((x, y) => x[0] - y[0]);
    const [end, a] = running.shift();
    now = end;
    free++;
    done++;
    for (const d of dependents.get(a)) {
      const k = waiting.get(d) - 1;
      waiting.set(d, k);
      if (k === 0) ready.push(d);
    }
  }
  return now;
}

function planOf(actions, slots) {
  const { dependents, remaining, hops, criticalPath, totalWork } = analyse(actions);
  const kinds = {};
  for (const a of actions) kinds[a.kind] = (kinds[a.kind] ?? 0) + 1;
  let maxFanIn = 0;
  for (const a of actions) maxFanIn = Math.max(maxFanIn, a.inputs.length);
  const idealSeconds = Math.max(criticalPath, totalWork / slots);
  return {
    kinds,
    edges: actions.reduce((s, a) => s + a.inputs.length, 0),
    maxFanIn,
    criticalPathSeconds: round(criticalPath),
    totalWorkSeconds: round(totalWork),
    workBoundSeconds: round(totalWork / slots),
    idealSeconds: round(idealSeconds),
    simulatedSeconds: round(simulate(actions, dependents, slots, remaining)),
    simulatedByHopsSeconds: round(simulate(actions, dependents, slots, hops)),
  };
}

const round = (x, d = 3) => (x === undefined || Number.isNaN(x) ? undefined : Math.round(x * 10 ** d) / 10 ** d);

// ---------- daemons ----------

const opts = parseArgs(process.argv.slice(2));
const PIDS_FILE = process.env.BENCH_PIDS_FILE; // run.sh kills what is listed here if we die
const daemons = [];

function startDaemon(args, nodeFlags = []) {
  // Through the `orion` launcher, as users start it (its per-command settings included); a
  // profiled daemon needs Node's own command line, which bypasses them.
  const proc = nodeFlags.length === 0 ? spawn(ORION, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true }) : spawn(process.execPath, [...nodeFlags, ORION, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  if (PIDS_FILE) appendFileSync(PIDS_FILE, `${proc.pid}\n`);
  let out = '';
  const keep = (d) => {
    if (out.length < 1_000_000) out += d;
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise((r) => proc.on('exit', () => r()));
  const d = { proc, output: () => out, exited };
  daemons.push(d);
  return d;
}

const alive = (d) => d.proc.exitCode === null && d.proc.signalCode === null;

let stopping = false;
/** The run's scratch directory (head data, node work dirs), removed however the run ends. */
let scratch;
async function killAll() {
  stopping = true;
  for (const d of daemons) {
    if (!alive(d)) continue;
    try {
      process.kill(-d.proc.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await Promise.race([Promise.all(daemons.map((d) => d.exited)), new Promise((r) => setTimeout(r, 5000))]);
  if (scratch) discardScratch(scratch);
}

/**
 * Removes the run's scratch directory, or with BENCH_TRASH moves it there for the caller to
 * delete after its last run: on a journal-less ext4, files created near inodes freed in the
 * last ~35 s cost many times more (see bench.mjs discard), so deleting one run's 40,000 files
 * would slow the next run's head.
 */
function discardScratch(dir) {
  const trash = process.env.BENCH_TRASH;
  if (trash) {
    try {
      mkdirSync(trash, { recursive: true });
      renameSync(dir, path.join(trash, path.basename(dir)));
      return;
    } catch {
      // Another filesystem: delete it.
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

/** SIGTERM and wait (a CPU profile is written on a clean exit), then SIGKILL what is left. */
async function stopGracefully(list, ms = 15_000) {
  stopping = true;
  for (const d of list) if (alive(d)) d.proc.kill('SIGTERM');
  await Promise.race([Promise.all(list.map((d) => d.exited)), new Promise((r) => setTimeout(r, ms))]);
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await killAll();
    process.exit(130);
  });
}

async function waitFor(what, fn, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function vmHwmKb(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const CLK_TCK = 100; // Linux's USER_HZ for /proc/PID/stat on every mainstream architecture
/** CPU seconds of a process (utime+stime) and of its reaped children (cutime+cstime). */
function cpuSeconds(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // fields after the command: state(3) ... utime(14) stime(15) cutime(16) cstime(17), 1-based in proc(5)
    const n = (i) => Number(f[i - 3]);
    return { self: (n(14) + n(15)) / CLK_TCK, children: (n(16) + n(17)) / CLK_TCK };
  } catch {
    return { self: 0, children: 0 };
  }
}

function unary(client, method, req) {
  return new Promise((resolve, reject) => client[method](req, (err, res) => (err ? reject(err) : resolve(res))));
}

/**
 * The .cpuprofile files in `dir`: the top functions by self time, and the top Orion functions
 * (frames of dist/orion.mjs and its chunks) by inclusive time, as "ms  function  file:line".
 */
function summarizeProfiles(dir, top = 25) {
  const out = [];
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.cpuprofile'))) {
    const p = JSON.parse(readFileSync(path.join(dir, f), 'utf8'));
    const dt = new Map();
    for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const name = (cf) => `${cf.functionName || '(anonymous)'}  ${cf.url.replace(/^.*\//, '')}:${cf.lineNumber + 1}`;
    const self = new Map();
    const inclusive = new Map();
    let busy = 0;
    for (const n of p.nodes) {
      const us = dt.get(n.id) ?? 0;
      self.set(name(n.callFrame), (self.get(name(n.callFrame)) ?? 0) + us);
      if (n.callFrame.functionName === '(idle)') continue;
      busy += us;
      const seen = new Set();
      for (let id = n.id; id !== undefined; id = parent.get(id)) {
        const cf = byId.get(id).callFrame;
        if (!/\/dist\/(orion|chunks\/.*)\.mjs$/.test(cf.url) || seen.has(name(cf))) continue;
        seen.add(name(cf));
        inclusive.set(name(cf), (inclusive.get(name(cf)) ?? 0) + us);
      }
    }
    const list = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, us]) => `  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`);
    out.push(`${f}: ${(busy / 1e6).toFixed(1)} s busy; by self time:`, ...list(self), `${f}: Orion functions by inclusive time:`, ...list(inclusive));
  }
  return out.join('\n');
}

/**
 * K fake nodes in this process (mode fake-nodes, started by dispatch --workers fake): each
 * registers, connects, heartbeats, and reports every assignment finished at once with exit
 * code 0 and no outputs. Runs until killed.
 */
async function fakeNodes() {
  const { credentials } = await import(path.join(REPO, 'node_modules/@grpc/grpc-js/build/src/index.js'));
  const { WorkerClient, WorkerMessage } = await import(path.join(REPO, 'dist/proto/gen/orion/v1/worker.js'));
  for (let i = 0; i < opts.nodes; i++) {
    const nodeId = `f${String(i).padStart(2, '0')}`;
    const client = new WorkerClient(opts.head, credentials.createInsecure());
    const reg = await unary(client, 'register', { nodeId, address: '', slots: opts.slots, platform: { properties: [] }, metadata: {} });
    const call = client.connect();
    const send = (m) => call.write(WorkerMessage.fromPartial(m));
    send({ hello: { nodeId, sessionId: reg.sessionId } });
    setInterval(() => send({ heartbeat: { running: 0, load: 0 } }), Number(reg.heartbeatIntervalMs));
    call.on('data', (msg) => {
      if (!msg.assign) return;
      const t = new Date();
      send({ finished: { assignmentId: msg.assign.assignmentId, result: { exitCode: 0, executionMetadata: { worker: nodeId, workerStartTimestamp: t, workerCompletedTimestamp: t } } } });
    });
    call.on('error', (err) => {
      process.stderr.write(`fake node ${nodeId}: ${err.message}\n`);
      process.exit(1);
    });
  }
  process.stdout.write('fake nodes connected\n');
  await new Promise(() => {});
}

// ---------- percentiles ----------

function stats(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
  return { mean: round(v.reduce((s, x) => s + x, 0) / v.length, 1), p50: round(q(0.5), 1), p90: round(q(0.9), 1), p99: round(q(0.99), 1), max: round(v.at(-1), 1) };
}

// ---------- main ----------

async function main() {
  if (opts.mode === 'fake-nodes') return fakeNodes();
  if (opts.mode === 'plan') {
    const actions = scaled(cppDag(opts.actions, opts.seed));
    process.stdout.write(`${JSON.stringify({ mode: 'plan', actions: actions.length, seed: opts.seed, nodes: opts.nodes, slotsPerNode: opts.slots, ...planOf(actions, opts.nodes * opts.slots) })}\n`);
    return;
  }
  const { credentials } = await import(path.join(REPO, 'node_modules/@grpc/grpc-js/build/src/index.js'));
  const re = await import(path.join(REPO, 'dist/proto/gen/build/bazel/remote/execution/v2/remote_execution.js'));
  const { ClusterClient, NodeStatus } = await import(path.join(REPO, 'dist/proto/gen/orion/v1/cluster.js'));
  const { BuildsClient, BuildRequest, BuildEvent_Kind: K } = await import(path.join(REPO, 'dist/proto/gen/orion/v1/build.js'));
  const { digestOf, EMPTY_DIGEST } = await import(path.join(REPO, 'dist/cas/digest.js'));

  const tmp = mkdtempSync(path.join(process.env.BENCH_TMP || os.tmpdir(), 'orion-bench-scale-'));
  scratch = tmp;
  // The head and each node in a directory of its own block groups (see own-dirs.mjs).
  const ownDirs = makeOwnDirs(tmp, ['head', ...Array.from({ length: opts.nodes }, (_, i) => `n${String(i).padStart(2, '0')}`)]);
  const started = performance.now();
  const loadAvgBefore = os.loadavg()[0];
  const overall = setTimeout(async () => {
    process.stderr.write(`scale: timed out after ${opts.timeout}s\n`);
    await killAll();
    process.exit(124);
  }, opts.timeout * 1000);
  const profDir = opts['cpu-prof'] ? path.resolve(opts['cpu-prof']) : '';
  if (profDir) mkdirSync(profDir, { recursive: true });
  const prof = (name) => (profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `${name}.cpuprofile`] : []);
  try {
    // BENCH_HEAD_NODE_FLAGS: extra Node flags for the head (e.g. --heapsnapshot-signal=SIGUSR2 to look at its memory).
    const headFlags = (process.env.BENCH_HEAD_NODE_FLAGS || '').split(/\s+/).filter(Boolean);
    const head = startDaemon(['head', '--host', '127.0.0.1', '--port', '0', '--data-dir', path.join(tmp, 'head'), '--log-level', 'warn', ...(process.env.SCALE_HEAD_FLAGS ?? '').split(/\s+/).filter(Boolean)], [...prof('head'), ...headFlags]);
    const address = await waitFor('head to listen', () => /orion head listening on (\S+)/.exec(head.output())?.[1], 30_000);
    const nodeIds = [];
    if (opts.workers === 'fake') {
      for (let i = 0; i < opts.nodes; i++) nodeIds.push(`f${String(i).padStart(2, '0')}`);
      const fake = spawn(process.execPath, [fileURLToPath(import.meta.url), 'fake-nodes', '--head', address, '--nodes', String(opts.nodes), '--slots', String(opts.slots)], { stdio: ['ignore', 'ignore', 'inherit'], detached: true });
      if (PIDS_FILE) appendFileSync(PIDS_FILE, `${fake.pid}\n`);
      daemons.push({ proc: fake, output: () => '', exited: new Promise((r) => fake.on('exit', () => r())) });
      fake.on('exit', async (code) => {
        if (stopping) return;
        process.stderr.write(`scale: the fake nodes exited (${code})\n`);
        await killAll();
        process.exit(1);
      });
    }
    for (let i = 0; i < (opts.workers === 'fake' ? 0 : opts.nodes); i++) {
      const id = `n${String(i).padStart(2, '0')}`;
      nodeIds.push(id);
      const args = ['node', '--head', address, '--id', id, '--slots', String(opts.slots), '--work-dir', path.join(tmp, id), '--no-peer', '--log-level', 'warn'];
      if (opts.sandbox === 'off') args.push('--no-sandbox');
      // For experiments: more node flags (e.g. SCALE_NODE_FLAGS='--max-processes 0').
      args.push(...(process.env.SCALE_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean));
      startDaemon(args, opts['cpu-prof-nodes'] ? prof(id) : []);
    }
    const cluster = new ClusterClient(address, credentials.createInsecure());
    await waitFor(
      `${opts.nodes} active nodes`,
      async () => {
        const r = await unary(cluster, 'listNodes', { status: NodeStatus.NODE_STATUS_ACTIVE });
        return r.nodes.length >= opts.nodes;
      },
      30_000 + opts.nodes * 3_000,
    );
    cluster.close();
    const rssIdleKb = vmHwmKb(head.proc.pid);

    const grpcOpts = { 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20 };
    const cas = new re.ContentAddressableStorageClient(address, credentials.createInsecure(), grpcOpts);
    const builds = new BuildsClient(address, credentials.createInsecure(), grpcOpts);
    const upload = async (blobs) => {
      for (let i = 0; i < blobs.length; i += 2000) {
        const r = await unary(cas, 'batchUpdateBlobs', { instanceName: '', requests: blobs.slice(i, i + 2000).map((b) => ({ digest: b.digest, data: b.data, compressor: 0 })), digestFunction: 0 });
        const bad = r.responses.find((x) => x.status && x.status.code !== 0);
        if (bad) throw new Error(`BatchUpdateBlobs: ${bad.status.message}`);
      }
    };
    /** `id` (in the environment) makes the command of each action its own when argv alone would not. */
    const commandBlob = (argv, outputs, id) => {
      const env = [{ name: 'PATH', value: '/usr/bin:/bin' }, ...(id ? [{ name: 'SCALE_ACTION', value: id }] : [])];
      const data = Buffer.from(re.Command.encode(re.Command.fromPartial({ arguments: argv, environmentVariables: env, outputPaths: outputs })).finish());
      return { digest: digestOf(data), data };
    };

    const actions = opts.mode === 'sleep' ? scaled(cppDag(opts.actions, opts.seed)) : noopDag(opts.actions, opts.shape);
    const slots = opts.nodes * opts.slots;
    const plan = opts.mode === 'sleep' ? planOf(actions, slots) : undefined;

    /**
     * One build of the DAG under a new salt: sleep mode reads it from the source root (so
     * commands keep their digests), dispatch mode has it in argv (its actions have no inputs).
     */
    async function runBuild(label) {
      const salt = randomBytes(8).toString('hex');
      const blobs = [];
      let root = EMPTY_DIGEST;
      const specs = [];
      if (opts.mode === 'sleep') {
        const saltBlob = Buffer.from(`${salt}\n`);
        const dir = Buffer.from(re.Directory.encode(re.Directory.fromPartial({ files: [{ name: 'salt', digest: digestOf(saltBlob), isExecutable: false }] })).finish());
        root = digestOf(dir);
        blobs.push({ digest: digestOf(saltBlob), data: saltBlob }, { digest: root, data: dir });
      }
      const seen = new Set();
      const writes = opts.mode === 'sleep' && opts.action === 'write';
      for (const a of actions) {
        const c =
          opts.mode !== 'sleep'
            ? commandBlob(['true', `${salt}-${a.id}`], [])
            : writes
              ? commandBlob(['/bin/sh', '-c', `sleep ${a.sleep}; read s < salt; echo "${a.out} $s" > ${a.out}`], [a.out])
              : commandBlob(['sleep', String(a.sleep)], [], a.id);
        if (!seen.has(c.digest.hash)) blobs.push(c);
        seen.add(c.digest.hash);
        specs.push({
          id: a.id,
          commandDigest: c.digest,
          inputRootDigest: root,
          producedInputs: writes ? a.inputs.filter((p) => p.out).map((p) => ({ path: p.out, producer: p.id })) : [],
          deps: a.inputs.filter((p) => !writes || !p.out).map((p) => p.id),
          label: `${a.kind} ${a.out ?? a.id}`,
        });
      }
      await upload(blobs);
      const request = BuildRequest.fromPartial({ instanceName: '', buildId: `scale-${label}-${salt}`, sourceRoot: root, actions: specs, keepGoing: true, skipCacheLookup: false });

      const t = new Map(actions.map((a) => [a.id, {}]));
      const perNode = {};
      const counts = { finished: 0, failed: 0, skipped: 0, cacheHits: 0, retried: 0 };
      let firstError;
      let summary;
      let acceptedMs;
      let maxHeadKb = 0;
      const sampler = setInterval(() => {
        maxHeadKb = Math.max(maxHeadKb, vmHwmKb(head.proc.pid) ?? 0);
      }, 200);
      const cpu0 = daemons.map((d) => cpuSeconds(d.proc.pid));
      const client0 = process.cpuUsage();
      const t0 = Date.now();
      const p0 = performance.now();
      await new Promise((resolve, reject) => {
        const call = builds.build(request);
        call.on('data', (ev) => {
          const now = Date.now();
          const x = t.get(ev.actionId);
          switch (ev.kind) {
            case K.ACCEPTED:
              acceptedMs = now - t0;
              break;
            case K.QUEUED:
              x.queued = now;
              break;
            case K.STARTED:
              x.started ??= now;
              x.node = ev.nodeId;
              break;
            case K.RETRIED:
              counts.retried++;
              break;
            case K.CACHE_HIT:
            case K.FINISHED: {
              x.finished = now;
              x.node = ev.nodeId || x.node;
              if (ev.kind === K.CACHE_HIT) counts.cacheHits++;
              else counts.finished++;
              perNode[x.node] = (perNode[x.node] ?? 0) + 1;
              const m = ev.result?.executionMetadata;
              const ms = (d) => d?.getTime();
              if (m) x.meta = { start: ms(m.workerStartTimestamp), fetched: ms(m.inputFetchCompletedTimestamp), execStart: ms(m.executionStartTimestamp), execEnd: ms(m.executionCompletedTimestamp), end: ms(m.workerCompletedTimestamp) };
              break;
            }
            case K.FAILED:
              counts.failed++;
              firstError ??= `${ev.actionId}: ${ev.message || ev.status?.message}`;
              break;
            case K.SKIPPED:
              counts.skipped++;
              break;
            case K.BUILD_FINISHED:
              summary = ev.summary;
              break;
          }
        });
        call.on('error', reject);
        call.on('end', () => (summary ? resolve() : reject(new Error('the build stream ended without BUILD_FINISHED'))));
      });
      const wallSeconds = (performance.now() - p0) / 1000;
      clearInterval(sampler);
      const cpu1 = daemons.map((d) => cpuSeconds(d.proc.pid));
      const clientCpu = process.cpuUsage(client0);
      const headCpuSeconds = cpu1[0].self - cpu0[0].self;
      const nodesSelfCpuSeconds = cpu1.slice(1).reduce((s, c, i) => s + c.self - cpu0[i + 1].self, 0);
      const nodesCpuSeconds = nodesSelfCpuSeconds + cpu1.slice(1).reduce((s, c, i) => s + c.children - cpu0[i + 1].children, 0);
      const r = {
        ok: summary.ok && counts.finished === actions.length,
        finished: counts.finished,
        failed: counts.failed,
        skipped: counts.skipped,
        cacheHits: counts.cacheHits,
        retried: counts.retried,
        firstError,
        wallSeconds: round(wallSeconds),
        headWallSeconds: round(Number(summary.wallMs) / 1000),
        acceptSeconds: round(acceptedMs / 1000),
        headCpuSeconds: round(headCpuSeconds, 2),
        headCpuMsPerAction: round((headCpuSeconds * 1000) / actions.length, 3),
        // The node processes and their children (cp, sh, the commands), and per action.
        nodesCpuSeconds: round(nodesCpuSeconds, 2),
        nodesSelfCpuSeconds: round(nodesSelfCpuSeconds, 2),
        nodesCpuMsPerAction: round((nodesCpuSeconds * 1000) / actions.length, 3),
        clientCpuSeconds: round((clientCpu.user + clientCpu.system) / 1e6, 2),
        headPeakRssKb: Math.max(maxHeadKb, vmHwmKb(head.proc.pid) ?? 0),
        perNode: Object.fromEntries(nodeIds.map((id) => [id, perNode[id] ?? 0])),
      };
      if (opts.mode === 'dispatch') return { ...r, actionsPerSecond: round(actions.length / wallSeconds, 1) };
      r.efficiency = round(plan.idealSeconds / wallSeconds);
      r.efficiencyVsSimulated = round(plan.simulatedSeconds / wallSeconds);
      return { ...r, ...whereTimeGoes(actions, t, slots, wallSeconds, t0) };
    }

    const cold = [];
    for (let i = 0; i < opts.warmup; i++) cold.push(await runBuild(`warmup${i}`));
    const measured = await runBuild('measured');
    cas.close();
    builds.close();
    const nodeKbs = daemons.slice(1).map((d) => vmHwmKb(d.proc.pid) ?? 0);
    const out = {
      mode: opts.mode,
      ...(opts.workers === 'fake' ? { workers: 'fake' } : {}),
      actions: actions.length,
      nodes: opts.nodes,
      slotsPerNode: opts.slots,
      sandbox: opts.sandbox,
      ...(opts.mode === 'sleep' ? { seed: opts.seed, warmupBuilds: opts.warmup, timeScale: opts['time-scale'], action: opts.action } : { shape: opts.shape }),
      ...(plan ?? {}),
      ...measured,
      headIdleRssKb: rssIdleKb,
      nodePeakRssKbMax: Math.max(...nodeKbs),
      // The head's first build of this DAG (no measured durations: hop-count priority), node caches cold.
      ...(cold.length > 0 ? { coldHead: { ok: cold[0].ok, wallSeconds: cold[0].wallSeconds, efficiency: cold[0].efficiency, efficiencyVsSimulated: cold[0].efficiencyVsSimulated, perNode: cold[0].perNode } } : {}),
      cores: os.availableParallelism(),
      loadAvgBefore: round(loadAvgBefore, 2),
      ownDirs,
      totalSeconds: round((performance.now() - started) / 1000, 1),
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    if (profDir) {
      await stopGracefully(daemons);
      process.stderr.write(`${summarizeProfiles(profDir)}\n`);
    }
  } finally {
    clearTimeout(overall);
    await killAll();
  }
}

/**
 * Where the measured wall time went, from the client's event times and the nodes' execution
 * metadata (one clock: everything runs on this machine). Milliseconds unless named otherwise.
 */
function whereTimeGoes(actions, t, slots, wallSeconds, t0) {
  const nodeOverhead = [];
  const fetch = [];
  const materialise = [];
  const runExtra = [];
  const upload = [];
  const handoff = [];
  const reportLag = [];
  let busy = 0;
  for (const a of actions) {
    const x = t.get(a.id);
    const m = x.meta;
    if (!m) continue;
    busy += m.end - m.start;
    nodeOverhead.push(m.end - m.start - a.sleep * 1000);
    fetch.push(m.fetched - m.start);
    materialise.push(m.execStart - m.fetched);
    runExtra.push(m.execEnd - m.execStart - a.sleep * 1000);
    upload.push(m.end - m.execEnd);
    reportLag.push(x.finished - m.end);
    // Producer done on its node -> this action started on a node (resolve, queue, dispatch, slot wait).
    const last = Math.max(...a.inputs.map((p) => t.get(p.id).meta?.end ?? -Infinity));
    if (a.inputs.length > 0 && Number.isFinite(last)) handoff.push(m.start - last);
  }
  // The chain that ended last: from the last action to finish, back through the producer that finished last.
  const chain = [];
  let a = actions.reduce((b, c) => ((t.get(c.id).meta?.end ?? 0) > (t.get(b.id).meta?.end ?? 0) ? c : b));
  while (a) {
    chain.unshift(a);
    a = a.inputs.length ? a.inputs.reduce((b, c) => ((t.get(c.id).meta?.end ?? 0) > (t.get(b.id).meta?.end ?? 0) ? c : b)) : undefined;
  }
  let prevEnd = t0;
  const steps = chain.map((c) => {
    const m = t.get(c.id).meta ?? {};
    const s = { id: c.id, sleep: c.sleep, waitMs: Math.round(m.start - prevEnd), nodeOverheadMs: Math.round(m.end - m.start - c.sleep * 1000), node: t.get(c.id).node };
    prevEnd = m.end;
    return s;
  });
  const lastEnd = prevEnd;
  return {
    // Share of the slots' time spent inside an action on a node, and inside its command's sleep.
    slotBusyShare: round(busy / (slots * wallSeconds * 1000)),
    slotSleepShare: round(actions.reduce((s, x) => s + x.sleep, 0) / (slots * wallSeconds)),
    perActionMs: {
      nodeOverhead: stats(nodeOverhead),
      fetchInputs: stats(fetch),
      materialise: stats(materialise),
      spawnAndExit: stats(runExtra),
      outputsUpload: stats(upload),
      handoff: stats(handoff),
      reportToClient: stats(reportLag),
    },
    // The realised critical chain: waits (before its first action and between steps: resolve, queue, dispatch) and node overheads.
    lastChain: {
      sleepSeconds: round(chain.reduce((s, c) => s + c.sleep, 0)),
      waitSeconds: round(steps.reduce((s, x) => s + x.waitMs, 0) / 1000),
      nodeOverheadSeconds: round(steps.reduce((s, x) => s + x.nodeOverheadMs, 0) / 1000),
      tailSeconds: round(wallSeconds - (lastEnd - t0) / 1000),
      steps,
    },
  };
}

main().then(
  () => process.exit(0),
  async (err) => {
    process.stderr.write(`scale: ${err.stack || err}\n`);
    await killAll();
    process.exit(1);
  },
);
