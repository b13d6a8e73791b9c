// Orion benchmark driver (run through bench/run.sh, which prepares the project and the peers).
//
// For each repetition, runs every tool in turn (round-robin, the starting tool rotating with the
// repetition) through the same chain of scenarios, each timed with performance.now() around the
// spawned build command:
//   cold   fresh copy of the tree, the tool's caches emptied (cluster: a fresh head and fresh nodes)
//   warm   the tree removed and copied fresh at the SAME path, caches kept from `cold`
//   noop   the same command again in that tree
//   edit   a comment line appended to one .c file (content change)
//   touch  one header touched (mtime only)
// then measures memory and runs the synthetic scale benchmark (bench/scale.mjs), and writes the
// Markdown report (BENCH_OUT) and the raw numbers (BENCH_JSON).
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { makeOwnDirs } from './own-dirs.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ORION = path.join(REPO, 'dist/orion.mjs');
const env0 = process.env;

// ---------- configuration ----------
const cfg = {
  project: path.resolve(REPO, env0.BENCH_PROJECT || 'bench/work/redis-src'),
  projectLabel: env0.BENCH_PROJECT_LABEL || env0.BENCH_PROJECT || 'Redis 7.0.15 (Debian source package)',
  makeArgs: (env0.BENCH_MAKEARGS ?? 'MALLOC=libc').split(/\s+/).filter(Boolean),
  reps: Math.max(1, Number(env0.BENCH_REPS || 3)),
  out: path.resolve(REPO, env0.BENCH_OUT || 'bench/RESULTS.md'),
  json: path.resolve(REPO, env0.BENCH_JSON || 'bench/results.json'),
  work: path.resolve(REPO, env0.BENCH_WORK || 'bench/work'),
  peersStatus: env0.BENCH_PEERS_STATUS || path.join(REPO, 'bench/work/peers.status'),
  tools: (env0.BENCH_TOOLS || 'make ccache sccache distcc orion orion-cluster').split(/\s+/).filter(Boolean),
  scenarios: (env0.BENCH_SCENARIOS || 'cold warm noop edit touch').split(/\s+/).filter(Boolean),
  cmdTimeoutS: Number(env0.BENCH_CMD_TIMEOUT || 3600),
  quick: env0.BENCH_QUICK === '1',
  skipMemory: env0.BENCH_SKIP_MEMORY === '1',
  skipScale: env0.BENCH_SKIP_SCALE === '1',
  pidsFile: env0.BENCH_PIDS_FILE || path.join(REPO, 'bench/work/pids'),
  clusterNodes: 2,
  clusterSlots: Number(env0.BENCH_CLUSTER_SLOTS || 2),
  distccJobs: Number(env0.BENCH_DISTCC_JOBS || 2),
};
cfg.nproc = Number(spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()) || os.availableParallelism();
const exists = (p) => existsSync(path.join(cfg.project, p));
cfg.editFile = env0.BENCH_EDIT_FILE || (exists('src/t_string.c') ? 'src/t_string.c' : exists('lib/add.c') ? 'lib/add.c' : '');
cfg.touchFile = env0.BENCH_TOUCH_FILE || (exists('src/server.h') ? 'src/server.h' : exists('include/util.h') ? 'include/util.h' : '');
cfg.outputs = (env0.BENCH_OUTPUTS ?? (exists('src/server.c') ? 'src/redis-server src/redis-cli src/redis-benchmark' : exists('lib/add.c') && exists('src/calc.c') ? 'hello calc tools/wordstat' : ''))
  .split(/\s+/)
  .filter(Boolean);
// Synthetic scale parameters (the issue's numbers by default; small ones in quick mode).
cfg.scale = {
  dispatchActions: Number(env0.BENCH_SCALE_DISPATCH_ACTIONS || (cfg.quick ? 500 : 10000)),
  dispatchNodes: Number(env0.BENCH_SCALE_DISPATCH_NODES || 4),
  dispatchSlots: Number(env0.BENCH_SCALE_DISPATCH_SLOTS || 8),
  dispatchShape: env0.BENCH_SCALE_DISPATCH_SHAPE || 'flat',
  // Also dispatch to fake nodes that finish every assignment at once: the head's own throughput.
  dispatchFake: env0.BENCH_SCALE_DISPATCH_FAKE !== '0',
  // The fake-node run also gives the head's memory with the issue's 20,000-action DAG.
  dispatchFakeActions: Number(env0.BENCH_SCALE_DISPATCH_FAKE_ACTIONS || (cfg.quick ? 500 : 20000)),
  sleepActions: Number(env0.BENCH_SCALE_SLEEP_ACTIONS || (cfg.quick ? 200 : 2000)),
  sleepNodes: (env0.BENCH_SCALE_SLEEP_NODES || '6 32').split(/\s+/).filter(Boolean).map(Number),
  sleepSlots: Number(env0.BENCH_SCALE_SLEEP_SLOTS || 4),
  seed: Number(env0.BENCH_SCALE_SEED || 1),
  warmup: Number(env0.BENCH_SCALE_WARMUP ?? 1),
  sandbox: env0.BENCH_SCALE_SANDBOX || 'off',
  timeoutS: Number(env0.BENCH_SCALE_TIMEOUT || 1800),
};
if (!existsSync(path.join(cfg.project))) throw new Error(`project ${cfg.project} does not exist`);
if (!cfg.editFile || !exists(cfg.editFile)) throw new Error(`BENCH_EDIT_FILE: no .c file to edit in ${cfg.project} (got ${JSON.stringify(cfg.editFile)})`);
if (!cfg.touchFile || !exists(cfg.touchFile)) throw new Error(`BENCH_TOUCH_FILE: no header to touch in ${cfg.project} (got ${JSON.stringify(cfg.touchFile)})`);

const RUN = path.join(cfg.work, 'run');
const TREE = path.join(RUN, 'tree', 'project'); // one path for every tool and every run
const LOGS = path.join(RUN, 'logs');
const TRASH = path.join(RUN, 'trash');
let trashed = 0;

/**
 * Moves a tree the benchmark is done with aside; the trash is deleted after the last timed run.
 * This machine's ext4 has no journal, and then the kernel avoids reusing an inode freed in the
 * last ~5-35 s: each file created in a block group scans past every such inode (3,000 creates
 * took 115 ms in a clean directory and 565-1,350 ms after deletions nearby). Deleting a head's
 * and two nodes' stores (~5,000 files) just before the next cluster run charged that run for the
 * benchmark's own clean-up; renaming frees nothing.
 */
function discard(p) {
  if (!existsSync(p)) return;
  mkdirSync(TRASH, { recursive: true });
  renameSync(p, path.join(TRASH, String(++trashed)));
}
const log = (s) => process.stderr.write(`bench: ${s}\n`);

// ---------- processes ----------
const daemons = new Set();
function track(pid) {
  if (pid) appendFileSync(cfg.pidsFile, `${pid}\n`);
}
function killGroup(pid, sig = 'SIGKILL') {
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      /* gone */
    }
  }
}

/** Starts a daemon in its own process group, its output in logFile. */
function startDaemon(cmd, args, { env, logFile, cwd } = {}) {
  const fd = openSync(logFile, 'a');
  const proc = spawn(cmd, args, { cwd, env, stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  track(proc.pid);
  const exited = new Promise((r) => proc.on('exit', () => r()));
  proc.on('error', () => {});
  const d = { proc, exited, logFile, name: path.basename(logFile) };
  daemons.add(d);
  return d;
}

async function stopDaemon(d) {
  if (d.proc.exitCode === null && d.proc.signalCode === null) {
    killGroup(d.proc.pid, 'SIGTERM');
    const t = setTimeout(() => killGroup(d.proc.pid, 'SIGKILL'), 5000);
    await d.exited;
    clearTimeout(t);
  }
  killGroup(d.proc.pid, 'SIGKILL'); // children (distccd's workers) left in the group
  daemons.delete(d);
}

async function stopAllDaemons() {
  await Promise.all([...daemons].map(stopDaemon));
  // sccache's server daemonizes itself: stop it through its port.
  const portFile = path.join(RUN, 'sccache.port');
  if (existsSync(portFile)) {
    sh('sccache', ['--stop-server'], { env: { ...baseEnv(), SCCACHE_SERVER_PORT: readFileSync(portFile, 'utf8').trim() }, timeout: 20_000 });
    rmSync(portFile, { force: true });
  }
}

/** Runs one command, timed by wall clock around the spawned process; output to logFile. */
function runTimed(cmd, args, { cwd, env, logFile, timeoutS = cfg.cmdTimeoutS }) {
  return new Promise((resolve) => {
    const fd = openSync(logFile, 'a');
    writeFileSync(fd, `$ ${[cmd, ...args].join(' ')}   (in ${cwd})\n`);
    const t0 = performance.now();
    const proc = spawn(cmd, args, { cwd, env, stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    track(proc.pid);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(proc.pid, 'SIGKILL');
    }, timeoutS * 1000);
    proc.on('error', (err) => {
      clearTimeout(timer);
      resolve({ seconds: (performance.now() - t0) / 1000, code: -1, error: err.message });
    });
    proc.on('exit', (code, signal) => {
      const seconds = (performance.now() - t0) / 1000;
      clearTimeout(timer);
      resolve({ seconds, code: code ?? -1, signal, timedOut });
    });
  });
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 600_000, ...opts });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(what, fn, timeoutMs = 30_000) {
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

// ---------- environment ----------
function baseEnv() {
  const e = { ...env0 };
  // `make bench` runs us under make: its jobserver and flags must not leak into the measured builds.
  for (const k of Object.keys(e)) {
    if (/^(MAKEFLAGS|MFLAGS|MAKELEVEL|MAKEOVERRIDES|GNUMAKEFLAGS|CC|CXX|CFLAGS|CPPFLAGS|LDFLAGS|NODE_OPTIONS)$/.test(k)) delete e[k];
    if (/^(CCACHE_|SCCACHE_|DISTCC_|ORION_|BENCH_)/.test(k)) delete e[k];
  }
  // The orion launcher runs `node` from PATH: the one running this script.
  e.PATH = `${path.dirname(process.execPath)}:${e.PATH ?? ''}`;
  e.SOURCE_DATE_EPOCH = '1700000000';
  e.LC_ALL = 'C';
  return e;
}

// ---------- peers ----------
function readPeers() {
  const peers = {};
  if (existsSync(cfg.peersStatus)) {
    for (const line of readFileSync(cfg.peersStatus, 'utf8').split('\n')) {
      const m = /^(\S+) (ok|missing) ?(.*)$/.exec(line.trim());
      if (m) peers[m[1]] = { ok: m[2] === 'ok', detail: m[3] };
    }
  }
  for (const p of ['ccache', 'sccache', 'distcc']) {
    if (!peers[p]) peers[p] = { ok: false, detail: 'not in the install status file (bench/install-peers.sh did not run)' };
  }
  return peers;
}

// ---------- tools ----------
const makeJ = `-j${cfg.nproc}`;
/** `orion build` arguments; ORION runs as the `orion` command does (its launcher line, then node). */
function orionBuildArgs(extra) {
  return ['build', ...extra, '--', ...cfg.makeArgs];
}

function defineTools(peers) {
  const cacheDir = (t) => path.join(RUN, 'caches', t);
  const tools = {
    make: {
      label: `make ${makeJ}`,
      command: () => ['make', [makeJ, ...cfg.makeArgs]],
    },
    ccache: {
      label: `ccache (make ${makeJ} CC="ccache cc")`,
      peer: 'ccache',
      env: () => ({ CCACHE_DIR: cacheDir('ccache') }),
      command: () => ['make', [makeJ, ...cfg.makeArgs, 'CC=ccache cc']],
      zeroStats: ['ccache', ['--zero-stats']],
      stats: ['ccache', ['--show-stats']],
      reset: () => discard(cacheDir('ccache')),
    },
    sccache: {
      label: `sccache (make ${makeJ} CC="sccache cc")`,
      peer: 'sccache',
      state: {},
      env() {
        return { SCCACHE_DIR: cacheDir('sccache'), SCCACHE_SERVER_PORT: String(this.state.port), SCCACHE_IDLE_TIMEOUT: '1800' };
      },
      command: () => ['make', [makeJ, ...cfg.makeArgs, 'CC=sccache cc']],
      zeroStats: ['sccache', ['--zero-stats']],
      stats: ['sccache', ['--show-stats']],
      reset: () => discard(cacheDir('sccache')),
      async setUp() {
        this.state.port = await freePort();
        writeFileSync(path.join(RUN, 'sccache.port'), `${this.state.port}\n`);
        mkdirSync(cacheDir('sccache'), { recursive: true });
        const r = sh('sccache', ['--start-server'], { env: { ...baseEnv(), ...this.env() } });
        if (r.code !== 0) throw new Error(`sccache --start-server: ${r.out}`);
      },
      async tearDown() {
        if (this.state.port) sh('sccache', ['--stop-server'], { env: { ...baseEnv(), ...this.env() } });
        rmSync(path.join(RUN, 'sccache.port'), { force: true });
      },
    },
    distcc: {
      label: `distcc (2 distccd on 127.0.0.1, /${cfg.distccJobs} each; make -j${cfg.clusterNodes * cfg.distccJobs} CC="distcc cc")`,
      peer: 'distcc',
      state: {},
      env() {
        return {
          DISTCC_HOSTS: this.state.ports.map((p) => `127.0.0.1:${p}/${cfg.distccJobs}`).join(' '),
          DISTCC_DIR: path.join(RUN, 'distcc-dir'),
          // Report a failed distribution as a failure rather than silently compiling locally.
          DISTCC_FALLBACK: '0',
        };
      },
      command: () => ['make', [`-j${cfg.clusterNodes * cfg.distccJobs}`, ...cfg.makeArgs, 'CC=distcc cc']],
      async setUp() {
        mkdirSync(path.join(RUN, 'distcc-dir'), { recursive: true });
        this.state.ports = [];
        this.state.daemons = [];
        for (let i = 0; i < cfg.clusterNodes; i++) {
          const port = await freePort();
          this.state.ports.push(port);
          // --log-stderr: distccd drops root to the distccd user, which cannot open our log files itself.
          this.state.daemons.push(
            startDaemon('distccd', ['--daemon', '--no-detach', '--listen', '127.0.0.1', '--port', String(port), '--allow', '127.0.0.1', '--jobs', String(cfg.distccJobs), '--log-stderr', '--log-level', 'warning'], {
              env: baseEnv(),
              logFile: path.join(LOGS, `distccd-${i}.log`),
            }),
          );
        }
        for (const port of this.state.ports) {
          await waitFor(`distccd on 127.0.0.1:${port}`, () => new Promise((r) => {
            const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
            s.on('error', () => r(false));
          }), 15_000);
        }
      },
      async tearDown() {
        for (const d of this.state.daemons ?? []) await stopDaemon(d);
        this.state.daemons = [];
      },
    },
    orion: {
      label: `orion build -j${cfg.nproc} (embedded)`,
      command: () => [ORION, orionBuildArgs(['-j', String(cfg.nproc), '--cache-dir', cacheDir('orion')])],
      reset: () => discard(cacheDir('orion')),
    },
    'orion-cluster': {
      label: `orion build --head (head + ${cfg.clusterNodes} nodes x ${cfg.clusterSlots} slots on 127.0.0.1, -j${cfg.clusterNodes * cfg.clusterSlots})`,
      state: {},
      command() {
        return [ORION, orionBuildArgs(['--head', this.state.address, '-j', String(cfg.clusterNodes * cfg.clusterSlots), '--cache-dir', cacheDir('orion-cluster')])];
      },
      reset: () => discard(cacheDir('orion-cluster')),
      async setUp() {
        const dir = path.join(RUN, 'cluster');
        discard(dir);
        // The head and each node in a directory of its own block groups, as on their own machines.
        if (!makeOwnDirs(dir, ['head', ...Array.from({ length: cfg.clusterNodes }, (_, i) => `n${i + 1}`)])) log('chattr +T refused: the daemons share block groups');
        const headLog = path.join(LOGS, 'head.log');
        writeFileSync(headLog, '');
        const head = startDaemon(ORION, ['head', '--host', '127.0.0.1', '--port', '0', '--data-dir', path.join(dir, 'head'), '--log-level', 'warn'], { env: baseEnv(), logFile: headLog });
        this.state.daemons = [head];
        this.state.address = await waitFor('the head to listen', () => /orion head listening on (\S+)/.exec(readFileSync(headLog, 'utf8'))?.[1], 30_000);
        for (let i = 0; i < cfg.clusterNodes; i++) {
          this.state.daemons.push(
            startDaemon(ORION, ['node', '--head', this.state.address, '--id', `bench-n${i + 1}`, '--slots', String(cfg.clusterSlots), '--work-dir', path.join(dir, `n${i + 1}`), '--log-level', 'warn'], {
              env: baseEnv(),
              logFile: path.join(LOGS, `node-${i + 1}.log`),
            }),
          );
        }
        await waitFor(`${cfg.clusterNodes} active nodes`, () => {
          const r = sh(process.execPath, [ORION, 'status', '--head', this.state.address, '--status', 'active'], { env: baseEnv(), timeout: 10_000 });
          return r.code === 0 && cfg.clusterNodes <= (r.out.match(/bench-n\d+/g) ?? []).length;
        }, 60_000);
      },
      async tearDown() {
        // Nodes first, so they do not log a lost head.
        for (const d of [...(this.state.daemons ?? [])].reverse()) await stopDaemon(d);
        this.state.daemons = [];
      },
    },
  };
  for (const [id, t] of Object.entries(tools)) {
    t.id = id;
    if (t.peer && !peers[t.peer]?.ok) t.unavailable = `${t.peer} not installed: ${peers[t.peer]?.detail ?? 'unknown'}`;
  }
  return cfg.tools.map((id) => {
    if (!tools[id]) throw new Error(`unknown tool ${id} in BENCH_TOOLS`);
    return tools[id];
  });
}

// ---------- the tree ----------
function freshTree() {
  discard(TREE);
  mkdirSync(path.dirname(TREE), { recursive: true });
  const r = sh('cp', ['-a', cfg.project, TREE]);
  if (r.code !== 0) throw new Error(`cp -a ${cfg.project} ${TREE}: ${r.out}`);
}

function checkOutputs() {
  const missing = cfg.outputs.filter((o) => !existsSync(path.join(TREE, o)));
  return missing.length ? `missing outputs: ${missing.join(', ')}` : undefined;
}

const SCENARIOS = {
  cold: { label: 'cold (empty caches, fresh tree)', prepare: () => freshTree() }, // caches were emptied before set-up
  warm: { label: 'warm cache, fresh tree at the same path', prepare: () => freshTree() },
  noop: { label: 'no-op rebuild', prepare: () => {} },
  edit: { label: `one .c edited (${cfg.editFile})`, prepare: () => appendFileSync(path.join(TREE, cfg.editFile), '\n/* orion bench: content change */\n') },
  touch: { label: `header touched (${cfg.touchFile})`, prepare: () => { const now = new Date(); utimesSync(path.join(TREE, cfg.touchFile), now, now); } },
};
const ORDER = ['cold', 'warm', 'noop', 'edit', 'touch'];

/** One tool's chain of scenarios for one repetition. */
async function runChain(tool, rep, runs) {
  const wanted = ORDER.filter((s) => cfg.scenarios.includes(s));
  // Each scenario needs the state the previous ones leave (warm: a filled cache; noop/edit/touch: a
  // built tree), so the chain always runs from cold and only the wanted scenarios are reported.
  const chain = ORDER.slice(0, Math.max(...wanted.map((s) => ORDER.indexOf(s))) + 1);
  try {
    tool.reset?.();
    await tool.setUp?.();
  } catch (err) {
    for (const s of wanted) runs.push({ tool: tool.id, scenario: s, rep, ok: false, error: `set-up failed: ${err.message}` });
    await tool.tearDown?.().catch(() => {});
    return;
  }
  let failed;
  try {
    for (const s of chain) {
      if (failed) {
        if (wanted.includes(s)) runs.push({ tool: tool.id, scenario: s, rep, ok: false, error: `not run: ${failed}` });
        continue;
      }
      SCENARIOS[s].prepare(tool);
      const [cmd, args] = tool.command();
      const env = { ...baseEnv(), ...(tool.env?.() ?? {}) };
      const logFile = path.join(LOGS, `rep${rep}-${tool.id}-${s}.log`);
      if (tool.zeroStats) sh(...tool.zeroStats, { env, cwd: TREE, timeout: 30_000 });
      const r = await runTimed(cmd, args, { cwd: TREE, env, logFile });
      // Untimed: the cache's own statistics for this scenario, so hits and misses can be checked in the log.
      if (tool.stats) appendFileSync(logFile, `\n$ ${tool.stats.flat().join(' ')}\n${sh(...tool.stats, { env, cwd: TREE, timeout: 30_000 }).out}\n`);
      const problem = r.timedOut ? `timed out after ${cfg.cmdTimeoutS}s` : r.code !== 0 ? `exit code ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.error ? `: ${r.error}` : ''}` : checkOutputs();
      log(`rep ${rep} ${tool.id.padEnd(13)} ${s.padEnd(5)} ${r.seconds.toFixed(3)}s${problem ? `  FAILED: ${problem} (see ${path.relative(REPO, logFile)})` : ''}`);
      if (problem) failed = `${s} failed (${problem})`;
      if (wanted.includes(s)) runs.push({ tool: tool.id, scenario: s, rep, ok: !problem, seconds: r.seconds, error: problem, log: path.relative(REPO, logFile) });
    }
  } finally {
    await tool.tearDown?.().catch((err) => log(`${tool.id} tear-down: ${err.message}`));
  }
}

// ---------- memory ----------
async function measureMemory() {
  const out = {};
  const cache = path.join(RUN, 'caches', 'orion-memory');
  discard(cache);
  freshTree();
  const rssFile = path.join(RUN, 'maxrss.jsonl');
  for (const which of ['cold', 'noop']) {
    rmSync(rssFile, { force: true });
    const timeFile = path.join(RUN, `time-${which}.txt`);
    const env = { ...baseEnv(), NODE_OPTIONS: `--require ${path.join(REPO, 'bench/maxrss-preload.cjs')}`, BENCH_MAXRSS_FILE: rssFile };
    const haveTime = existsSync('/usr/bin/time');
    const [cmd, args] = haveTime
      ? ['/usr/bin/time', ['-f', '%M', '-o', timeFile, ORION, ...orionBuildArgs(['-j', String(cfg.nproc), '--cache-dir', cache])]]
      : [ORION, orionBuildArgs(['-j', String(cfg.nproc), '--cache-dir', cache])];
    const r = await runTimed(cmd, args, { cwd: TREE, env, logFile: path.join(LOGS, `memory-orion-${which}.log`) });
    const self = existsSync(rssFile)
      ? readFileSync(rssFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).find((x) => x.argv?.[0] === 'build')
      : undefined;
    out[which] = {
      ok: r.code === 0,
      seconds: r.seconds,
      orionProcessPeakRssKb: self?.maxRssKb,
      largestProcessInTreePeakRssKb: haveTime && existsSync(timeFile) ? Number(readFileSync(timeFile, 'utf8').trim().split('\n').at(-1)) : undefined,
    };
    log(`memory orion build ${which}: ${JSON.stringify(out[which])}`);
  }
  discard(cache);
  return out;
}

// ---------- synthetic scale ----------
async function runScale() {
  const runOne = async (args) => {
    const logFile = path.join(LOGS, `scale-${args[0]}-${args.join('-').replace(/[^\w.-]/g, '')}.log`);
    const fd = openSync(logFile, 'a');
    const r = await new Promise((resolve) => {
      let stdout = '';
      const p = spawn(process.execPath, [path.join(REPO, 'bench/scale.mjs'), ...args, '--sandbox', cfg.scale.sandbox, '--timeout', String(cfg.scale.timeoutS)], {
        env: { ...baseEnv(), BENCH_PIDS_FILE: cfg.pidsFile, BENCH_TMP: RUN, BENCH_TRASH: TRASH },
        stdio: ['ignore', 'pipe', fd],
      });
      track(p.pid);
      p.stdout.on('data', (d) => (stdout += d));
      p.on('exit', (code) => resolve({ code, stdout }));
    });
    closeSync(fd);
    try {
      const j = JSON.parse(r.stdout.trim().split('\n').at(-1));
      log(`scale ${args.join(' ')}: ${JSON.stringify(j)}`);
      return j;
    } catch {
      log(`scale ${args.join(' ')} failed (exit ${r.code}, see ${path.relative(REPO, logFile)})`);
      return { failed: true, error: `exit code ${r.code}, see ${path.relative(REPO, logFile)}`, args };
    }
  };
  const s = cfg.scale;
  const dispatchArgs = ['dispatch', '--actions', String(s.dispatchActions), '--nodes', String(s.dispatchNodes), '--slots', String(s.dispatchSlots), '--shape', s.dispatchShape];
  const dispatch = await runOne(dispatchArgs);
  const fakeArgs = ['dispatch', '--actions', String(s.dispatchFakeActions), '--nodes', String(s.dispatchNodes), '--slots', String(s.dispatchSlots), '--shape', s.dispatchShape, '--workers', 'fake'];
  const dispatchFake = s.dispatchFake ? await runOne(fakeArgs) : undefined;
  const sleeps = [];
  // Actions that only sleep (the issue's synthetic actions), then the same DAG with actions that
  // also write their output for their consumers to fetch (what a build adds on a node).
  for (const action of ['sleep', 'write']) {
    for (const k of s.sleepNodes) {
      sleeps.push(await runOne(['sleep', '--actions', String(s.sleepActions), '--nodes', String(k), '--slots', String(s.sleepSlots), '--seed', String(s.seed), '--warmup', String(s.warmup), '--action', action]));
    }
  }
  return { dispatch, dispatchFake, sleeps };
}

// ---------- report ----------
function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const memKb = Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  const first = (cmd, args) => sh(cmd, args).out.split('\n')[0];
  return {
    cores: cfg.nproc,
    memory: `${(memKb / 1024 / 1024).toFixed(1)} GiB`,
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    gcc: first('gcc', ['--version']),
    make: first('make', ['--version']),
    loadAverageAtStart: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function summarize(runs, tools) {
  const sum = {};
  for (const t of tools) {
    sum[t.id] = {};
    for (const s of cfg.scenarios) {
      if (t.unavailable) {
        sum[t.id][s] = { unavailable: t.unavailable };
        continue;
      }
      const rs = runs.filter((r) => r.tool === t.id && r.scenario === s);
      const ok = rs.filter((r) => r.ok).map((r) => r.seconds);
      const failures = rs.filter((r) => !r.ok);
      sum[t.id][s] = ok.length
        ? { median: median(ok), min: Math.min(...ok), max: Math.max(...ok), n: ok.length, failed: failures.length, errors: failures.map((f) => f.error) }
        : { failed: failures.length, errors: failures.map((f) => f.error), n: 0 };
    }
  }
  return sum;
}

const fmtS = (x) => (x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
function cell(c) {
  if (!c) return 'not run';
  if (c.unavailable) return 'not installed';
  if (!c.n) return `FAILED (${c.failed}/${c.failed})`;
  const base = c.n > 1 ? `${fmtS(c.median)} (${fmtS(c.min)}–${fmtS(c.max)})` : fmtS(c.median);
  return c.failed ? `${base}, ${c.failed} failed` : base;
}

function ratio(sum, a, b, s) {
  const x = sum[a]?.[s];
  const y = sum[b]?.[s];
  if (!x?.n || !y?.n) return undefined;
  return x.median / y.median;
}

function whyMissing(sum, tool, s) {
  const c = sum[tool]?.[s];
  if (!c) return `${tool} not run`;
  if (c.unavailable) return `${tool} not installed`;
  if (!c.n) return `${tool} failed`;
  return undefined;
}

const TARGETS = [
  { scenario: 'cold', orion: 'orion', peer: 'make', max: 1.05, text: 'cold: embedded ≤ 1.05× make' },
  { scenario: 'cold', orion: 'orion-cluster', peer: 'distcc', max: 1.0, text: 'cold: cluster ≤ distcc' },
  { scenario: 'warm', orion: 'orion', peer: 'ccache', max: 0.25, text: 'warm, fresh tree: embedded ≤ 0.25× ccache warm' },
  { scenario: 'warm', orion: 'orion', peer: 'sccache', max: 0.25, text: 'warm, fresh tree: embedded ≤ 0.25× sccache warm' },
  { scenario: 'warm', orion: 'orion-cluster', peer: 'ccache', max: 0.25, text: 'warm, fresh tree: cluster ≤ 0.25× ccache warm' },
  { scenario: 'warm', orion: 'orion-cluster', peer: 'sccache', max: 0.25, text: 'warm, fresh tree: cluster ≤ 0.25× sccache warm' },
  { scenario: 'noop', orion: 'orion', peer: 'make', max: 1.0, text: 'no-op: embedded ≤ make no-op' },
  { scenario: 'noop', orion: 'orion-cluster', peer: 'make', max: 1.0, text: 'no-op: cluster ≤ make no-op' },
  { scenario: 'edit', orion: 'orion', peer: 'make', max: 1.1, text: 'one .c edited: embedded ≤ 1.1× make' },
  { scenario: 'edit', orion: 'orion-cluster', peer: 'make', max: 1.1, text: 'one .c edited: cluster ≤ 1.1× make' },
];

function report({ startedAt, finishedAt, mach, peers, tools, sum, runs, memory, scale }) {
  const L = [];
  const kb = (x) => (x ? `${(x / 1024).toFixed(0)} MiB` : 'n/a');
  L.push('# Orion benchmark results', '');
  L.push(`Written by \`make bench\` (bench/run.sh → bench/bench.mjs); raw numbers in \`${path.relative(REPO, cfg.json).startsWith('..') ? cfg.json : path.relative(REPO, cfg.json)}\`.`, '');
  if (cfg.quick) L.push('**Quick mode**: a harness check on a small project, not a benchmark result.', '');
  L.push(`- Date: ${startedAt} → ${finishedAt}`);
  L.push(`- Project: ${cfg.projectLabel} (\`${path.relative(REPO, cfg.project) || cfg.project}\`), make arguments: \`${cfg.makeArgs.join(' ') || '(none)'}\`, built at \`${path.relative(REPO, TREE)}\` by every tool`);
  L.push(`- Environment of every build: \`SOURCE_DATE_EPOCH=1700000000 LC_ALL=C\``);
  L.push(`- Repetitions: ${cfg.reps}; tools alternate run by run (round-robin within each repetition, the first tool rotating); figures are wall-clock seconds, median (min–max) over the repetitions`);
  L.push('');
  L.push('## Machine', '');
  L.push('| cores | memory | CPU | kernel | node | gcc | make | load average at start |');
  L.push('|---|---|---|---|---|---|---|---|');
  L.push(`| ${mach.cores} | ${mach.memory} | ${mach.cpu} | ${mach.kernel} | ${mach.node} | ${mach.gcc} | ${mach.make} | ${mach.loadAverageAtStart} |`);
  L.push('');
  L.push('## Tools', '');
  L.push('| tool | command | version / status |');
  L.push('|---|---|---|');
  for (const t of tools) {
    const st = t.peer ? (peers[t.peer].ok ? peers[t.peer].detail : `**NOT INSTALLED**: ${peers[t.peer].detail}`) : t.id === 'make' ? mach.make : 'this tree';
    L.push(`| ${t.id} | ${t.label} | ${st} |`);
  }
  L.push('');
  L.push('## Build times (seconds)', '');
  L.push(`| scenario | ${tools.map((t) => t.id).join(' | ')} |`);
  L.push(`|---|${tools.map(() => '---').join('|')}|`);
  for (const s of cfg.scenarios) L.push(`| ${SCENARIOS[s].label} | ${tools.map((t) => cell(sum[t.id][s])).join(' | ')} |`);
  L.push('');
  const failures = runs.filter((r) => !r.ok);
  if (failures.length) {
    L.push('Failed runs:', '');
    for (const f of failures) L.push(`- rep ${f.rep} ${f.tool} ${f.scenario}: ${f.error}${f.log ? ` (${f.log})` : ''}`);
    L.push('');
  }
  const unavailable = tools.filter((t) => t.unavailable);
  if (unavailable.length) {
    L.push('Not measured:', '');
    for (const t of unavailable) L.push(`- ${t.id}: ${t.unavailable}`);
    L.push('');
  }
  const peerIds = tools.filter((t) => !t.id.startsWith('orion')).map((t) => t.id);
  L.push('## Orion as a ratio to each peer (median ÷ median, same run)', '');
  L.push(`| scenario | Orion | ${peerIds.map((p) => `÷ ${p}`).join(' | ')} |`);
  L.push(`|---|---|${peerIds.map(() => '---').join('|')}|`);
  for (const s of cfg.scenarios) {
    for (const o of ['orion', 'orion-cluster'].filter((x) => sum[x])) {
      L.push(`| ${SCENARIOS[s].label} | ${o === 'orion' ? 'embedded' : 'cluster'} | ${peerIds.map((p) => { const r = ratio(sum, o, p, s); return r === undefined ? `n/a (${whyMissing(sum, o, s) ?? whyMissing(sum, p, s)})` : `${r.toFixed(2)}×`; }).join(' | ')} |`);
    }
  }
  L.push('');
  L.push('## Targets from the issue', '');
  L.push('| target | measured | met? |');
  L.push('|---|---|---|');
  for (const t of TARGETS) {
    if (!cfg.scenarios.includes(t.scenario) || !sum[t.orion] || !sum[t.peer]) continue;
    const r = ratio(sum, t.orion, t.peer, t.scenario);
    const measured = r === undefined ? `n/a (${whyMissing(sum, t.orion, t.scenario) ?? whyMissing(sum, t.peer, t.scenario)})` : `${r.toFixed(2)}× ${t.peer}`;
    L.push(`| ${t.text} | ${measured} | ${r === undefined ? 'not measured' : r <= t.max ? 'met' : '**not met**'} |`);
  }
  L.push('');
  L.push('## Memory', '');
  if (!memory) L.push('Not measured (BENCH_SKIP_MEMORY=1).');
  else {
    L.push('`orion build` (embedded) on this project, run apart from the timed runs: the Orion process\'s own peak RSS (getrusage of the Node process, via `bench/maxrss-preload.cjs`) and `/usr/bin/time -f %M` (the largest single process of the build, compilers included).', '');
    L.push('| run | seconds | Orion process peak RSS | largest process (`/usr/bin/time %M`) |');
    L.push('|---|---|---|---|');
    for (const [k, v] of Object.entries(memory)) L.push(`| ${k === 'cold' ? 'cold (empty cache)' : 'no-op'}${v.ok ? '' : ' (FAILED)'} | ${fmtS(v.seconds)} | ${kb(v.orionProcessPeakRssKb)} | ${kb(v.largestProcessInTreePeakRssKb)} |`);
    const cold = memory.cold;
    if (cold?.orionProcessPeakRssKb) {
      const mb = (cold.orionProcessPeakRssKb * 1024) / 1e6;
      L.push('', `Target \`orion build\` ≤ 200 MB on this project: ${mb.toFixed(0)} MB cold, ${mb <= 200 ? 'met' : '**not met**'}. The head's target (≤ 256 MB with a 20,000-action DAG) is under Synthetic scale.`);
    }
  }
  L.push('');
  L.push('## Synthetic scale (head and nodes on 127.0.0.1, orion.v1 Builds service)', '');
  if (!scale) L.push('Not measured (BENCH_SKIP_SCALE=1).');
  else {
    const pct = (x) => (x === undefined ? 'n/a' : `${(x * 100).toFixed(0)}%`);
    const ms = (st) => (st ? `${st.mean.toFixed(0)} ms (median ${st.p50.toFixed(0)})` : 'n/a');
    L.push(`One client process (bench/scale.mjs) submits the whole DAG once through \`Builds.Build\` and waits for BUILD_FINISHED; nodes are \`orion node --no-peer\` processes with ${cfg.scale.sandbox === 'off' ? '`--no-sandbox`' : 'the default sandbox'}. Client, head and every node share this machine's ${mach.cores} cores, so these figures bound Orion from below.`, '');
    const first = scale.sleeps.find((x) => x.failed !== true);
    if (first) {
      const k = first.kinds ?? {};
      L.push(`Sleep DAG (seed ${first.seed}): ${first.actions} actions shaped like a C/C++ build — ${k.generate ?? 0} generators → ${k.compile ?? 0} compiles (0.2–0.6 s) in libraries → ${k.archive ?? 0} archives (fan-in up to ${first.maxFanIn}) → ${k.link ?? 0} links (one 8–10 s, tools 1.5–4 s, tests 0.4–1.2 s) → 1 packaging step. Two runs of each size: actions that only sleep (\`sleep S\`, waiting for their producers through the DAG's edges; the issue's synthetic actions, which the targets are about), and actions that also write (\`sh -c 'sleep S; … > OUT'\`, each writing its declared output, which its consumers list as produced inputs: a shell, an output to upload and inputs made on other nodes to fetch, as in a real build). Critical path ${fmtS(first.criticalPathSeconds)} s, total work ${fmtS(first.totalWorkSeconds)} s. Efficiency = ideal / measured, ideal = max(critical path, total work / slots); "simulated" is a zero-overhead critical-path list schedule of the same DAG (what a perfect scheduler without overheads would take). ${first.warmupBuilds ? `The head first builds the DAG ${first.warmupBuilds === 1 ? 'once' : `${first.warmupBuilds} times`} with another salt, learning the actions' durations (its critical-path priority uses them); that first build is the "head's first build" column.` : ''}`, '');
    }
    L.push('| nodes × slots | actions | ideal (s) | simulated (s) | measured (s) | efficiency | target | head\'s first build | node overhead per action | failed |');
    L.push('|---|---|---|---|---|---|---|---|---|---|');
    for (const x of scale.sleeps) {
      if (x.failed === true) {
        L.push(`| ${x.args.join(' ')} | | | | | FAILED: ${x.error} | | | | |`);
        continue;
      }
      const target = x.nodes >= 32 ? 0.9 : 0.97;
      const cold = x.coldHead ? `${fmtS(x.coldHead.wallSeconds)} s, ${pct(x.coldHead.efficiency)}` : 'n/a';
      const writes = x.action === 'write';
      // One decimal: a rounded 97% must not sit beside "not met".
      L.push(`| ${x.nodes} × ${x.slotsPerNode} | ${writes ? 'sleep and write' : 'sleep only'} | ${fmtS(x.idealSeconds)} | ${fmtS(x.simulatedSeconds)} | ${fmtS(x.wallSeconds)} | **${(x.efficiency * 100).toFixed(1)}%** | ${writes ? `(≥ ${pct(target)}: ${x.efficiency >= target ? 'met' : 'not met'}, for reference)` : `≥ ${pct(target)}: ${x.efficiency >= target ? 'met' : '**not met**'}`} | ${cold} | ${ms(x.perActionMs?.nodeOverhead)} | ${x.failed}${x.firstError ? ` (${x.firstError})` : ''} |`);
    }
    for (const x of scale.sleeps) {
      if (x.failed === true) continue;
      L.push('', `${x.nodes} × ${x.slotsPerNode}, ${x.action === 'write' ? 'sleep and write' : 'sleep only'}: actions per node ${Object.values(x.perNode).join(', ')}; CPU in the measured build: head ${x.headCpuSeconds.toFixed(1)} s (${x.headCpuMsPerAction.toFixed(1)} ms per action), nodes and their processes ${x.nodesCpuSeconds.toFixed(1)} s (${x.nodesCpuMsPerAction.toFixed(0)} ms per action); per action on a node: fetching inputs ${ms(x.perActionMs?.fetchInputs)}, materialising the exec root ${ms(x.perActionMs?.materialise)}, spawn and exit beyond the sleep ${ms(x.perActionMs?.spawnAndExit)}, outputs ${ms(x.perActionMs?.outputsUpload)}; slots busy ${pct(x.slotBusyShare)} of the time, sleeping ${pct(x.slotSleepShare)}.`);
    }
    L.push('');
    const d = scale.dispatch;
    if (d.failed === true) L.push(`- Dispatch: FAILED (${d.error})`);
    else {
      L.push(`- Dispatch throughput: **${d.actionsPerSecond.toFixed(0)} actions/s** (target ≥ 2,000: ${d.actionsPerSecond >= 2000 ? 'met' : '**not met**'}) — ${d.actions} no-op actions (\`true SALT\`, ${d.shape === 'fanin' ? 'groups of 100 gathered by one more' : 'independent'}) in one DAG on ${d.nodes} nodes × ${d.slotsPerNode} slots in ${fmtS(d.wallSeconds)} s${d.failed ? `, ${d.failed} failed (${d.firstError})` : ''}`);
      L.push(`- Head peak RSS with ${d.actions} actions in one build: **${kb(d.headPeakRssKb)}** (idle, nodes registered: ${kb(d.headIdleRssKb)}); largest node: ${kb(d.nodePeakRssKbMax)}`);
      L.push(`- CPU used in that window: head ${d.headCpuSeconds.toFixed(2)} s (${d.headCpuMsPerAction.toFixed(2)} ms per action, a ceiling of about ${(1000 / d.headCpuMsPerAction).toFixed(0)} actions/s per core for the head alone), nodes and their processes ${d.nodesCpuSeconds.toFixed(2)} s (${d.nodesCpuMsPerAction.toFixed(1)} ms per action), submitting client ${d.clientCpuSeconds.toFixed(2)} s, on ${d.cores} cores`);
    }
    const f = scale.dispatchFake;
    if (f?.failed === true) L.push(`- Dispatch to fake nodes: FAILED (${f.error})`);
    else if (f) {
      L.push(`- The head alone (${f.actions} such actions, ${f.nodes} fake nodes × ${f.slotsPerNode} slots in one process that report every assignment done at once, no outputs): **${f.actionsPerSecond.toFixed(0)} actions/s**, head CPU ${f.headCpuMsPerAction.toFixed(2)} ms per action${f.failed ? `, ${f.failed} failed (${f.firstError})` : ''}`);
      const mb = (f.headPeakRssKb * 1024) / 1e6;
      L.push(`- Head peak RSS with ${f.actions} actions in one DAG (the fake-node run): **${kb(f.headPeakRssKb)}** (${mb.toFixed(0)} MB; target ≤ 256 MB${f.actions === 20000 ? `: ${mb <= 256 ? 'met' : '**not met**'}` : ', needs the 20,000-action run'})`);
    }
    const reduced = cfg.scale.sleepActions !== 2000 || cfg.scale.sleepSlots !== 4 || cfg.scale.dispatchActions !== 10000;
    if (reduced) L.push('', `Reduced from the issue's numbers (2,000-action DAG on K × 4 slots; 10,000 dispatch actions): sleep DAG of ${cfg.scale.sleepActions} actions on K × ${cfg.scale.sleepSlots} slots, dispatch ${cfg.scale.dispatchActions} actions.`);
  }
  L.push('');
  L.push('## Method', '');
  L.push('- Each tool, each repetition: `cold` = caches emptied (ccache/sccache dirs, Orion\'s `--cache-dir`; for the cluster also a new head data dir and new node work dirs) and a fresh `cp -a` of the source tree; `warm` = the tree removed and copied fresh at the same path, caches kept; `noop` = the same command again; `edit` = a comment line appended to the .c file; `touch` = `touch` of the header. Untimed: copying, cache clearing, starting daemons. Emptied caches, old trees and old cluster dirs are moved aside and deleted after the last timed run: on this machine\'s journal-less ext4 every file created near inodes freed in the last ~35 s scans past them (3,000 creates: 115 ms in a clean directory, 565-1,350 ms after deletions nearby), which charged the next run for the benchmark\'s own clean-up.');
  L.push('- sccache: its own cache dir and server port; the server is started before the tool\'s scenarios and stopped after them. distcc: two `distccd` on 127.0.0.1 (`--allow 127.0.0.1`), `DISTCC_FALLBACK=0` so a compile that could not be distributed fails instead of running locally unseen. Orion cluster: a head and two nodes on 127.0.0.1, started fresh for each repetition, each in a directory with ext4\'s `T` attribute (`chattr +T`: its subdirectories go to block groups of their own, as on separate machines; see bench/own-dirs.mjs). The synthetic scale runs do the same for their head and nodes.');
  L.push('- make and distcc have no cache: their `warm` figure is a second full build.');
  L.push('');
  return L.join('\n');
}

// ---------- main ----------
async function main() {
  const startedAt = new Date().toISOString();
  // A previous run's files are deleted at the end, with the trash (see discard).
  const previousRun = existsSync(RUN) ? `${RUN}.old-${process.pid}` : undefined;
  if (previousRun) renameSync(RUN, previousRun);
  mkdirSync(LOGS, { recursive: true });
  mkdirSync(path.dirname(cfg.pidsFile), { recursive: true });
  const mach = machine();
  const peers = readPeers();
  const tools = defineTools(peers);
  log(`project ${cfg.project} (${cfg.makeArgs.join(' ') || 'no make args'}), ${cfg.reps} repetition(s), tools: ${tools.map((t) => t.id + (t.unavailable ? ' (not installed)' : '')).join(', ')}`);
  const runs = [];
  const active = tools.filter((t) => !t.unavailable);
  for (let rep = 1; rep <= cfg.reps; rep++) {
    const k = (rep - 1) % active.length;
    for (const tool of [...active.slice(k), ...active.slice(0, k)]) await runChain(tool, rep, runs);
  }
  const sum = summarize(runs, tools);
  const memory = cfg.skipMemory ? undefined : await measureMemory();
  const scale = cfg.skipScale ? undefined : await runScale();
  // Logs stay in bench/work/run/logs; the tree and the (large, for Redis) caches go.
  for (const d of [path.dirname(TREE), path.join(RUN, 'caches'), path.join(RUN, 'cluster'), path.join(RUN, 'distcc-dir'), TRASH, previousRun]) if (d) rmSync(d, { recursive: true, force: true });
  const finishedAt = new Date().toISOString();
  const data = { startedAt, finishedAt, machine: mach, config: { ...cfg, scale: cfg.scale }, peers, summary: sum, runs, memory, scale };
  mkdirSync(path.dirname(cfg.json), { recursive: true });
  writeFileSync(cfg.json, `${JSON.stringify(data, null, 2)}\n`);
  writeResults({ startedAt, finishedAt, mach, peers, tools, sum, runs, memory, scale });
}

/** Writes RESULTS.md; the hand-written analysis at its end survives a re-run (update it by hand). */
function writeResults(r) {
  const ANALYSIS = '\n## Where the time goes';
  const previous = existsSync(cfg.out) ? readFileSync(cfg.out, 'utf8') : '';
  const analysis = previous.includes(ANALYSIS) ? previous.slice(previous.indexOf(ANALYSIS)) : '';
  const md = report(r) + analysis;
  mkdirSync(path.dirname(cfg.out), { recursive: true });
  writeFileSync(cfg.out, md);
  process.stdout.write(md);
  log(`wrote ${cfg.out} and ${cfg.json}`);
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, async () => {
    log(`${sig}: stopping daemons`);
    await stopAllDaemons();
    process.exit(130);
  });
}

// BENCH_RENDER_ONLY=1: rewrite RESULTS.md from the last results.json (after changing the report), running nothing.
const run = env0.BENCH_RENDER_ONLY === '1'
  ? async () => {
      const d = JSON.parse(readFileSync(cfg.json, 'utf8'));
      cfg.reps = d.config.reps;
      writeResults({ startedAt: d.startedAt, finishedAt: d.finishedAt, mach: d.machine, peers: d.peers, tools: defineTools(d.peers), sum: d.summary, runs: d.runs, memory: d.memory, scale: d.scale });
    }
  : main;

run().then(
  async () => {
    await stopAllDaemons();
    process.exit(0);
  },
  async (err) => {
    log(`error: ${err.stack || err}`);
    await stopAllDaemons();
    process.exit(1);
  },
);
