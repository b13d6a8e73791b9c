// Synthetic scale benchmark of the Orion head, through the REAPI Execution service.
//
//   node bench/scale.mjs dispatch --actions N --nodes K --slots S [--window W] [--sandbox auto|off]
//   node bench/scale.mjs sleep    --actions N --nodes K --slots S --sleep SECONDS [--sandbox auto|off]
//
// Starts a fresh head (own data dir) and K `orion node` processes on 127.0.0.1, uploads N unique
// actions (a salt in argv, empty input root), submits them with at most W Execute streams open
// (default: all at once), and prints one JSON object on stdout:
//   dispatch: actions/second from first submit to last completion, and the head's peak RSS (VmHWM)
//   sleep:    efficiency = ideal time (N * sleep / (K * S)) / actual wall time
// Every daemon it starts is killed before it exits (and on SIGINT/SIGTERM), by pid.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ORION = path.join(REPO, 'dist/orion.mjs');
const { credentials } = await import(path.join(REPO, 'node_modules/@grpc/grpc-js/build/src/index.js'));
const re = await import(path.join(REPO, 'dist/proto/gen/build/bazel/remote/execution/v2/remote_execution.js'));
const { ClusterClient, NodeStatus } = await import(path.join(REPO, 'dist/proto/gen/orion/v1/cluster.js'));
const { digestOf, EMPTY_DIGEST } = await import(path.join(REPO, 'dist/cas/digest.js'));

function parseArgs(argv) {
  const o = { mode: argv[0], actions: 1000, nodes: 2, slots: 4, window: 0, sleep: 0.05, sandbox: 'off', timeout: 1800 };
  for (let i = 1; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    const v = argv[i + 1];
    if (!(k in o)) throw new Error(`unknown option --${k}`);
    o[k] = k === 'sandbox' ? v : Number(v);
  }
  if (o.mode !== 'dispatch' && o.mode !== 'sleep') throw new Error('mode must be dispatch or sleep');
  if (!o.window) o.window = o.actions;
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const PIDS_FILE = process.env.BENCH_PIDS_FILE; // run.sh kills what is listed here if we die
const daemons = [];

function startDaemon(args, logFile) {
  const proc = spawn(process.execPath, [ORION, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  if (PIDS_FILE) appendFileSync(PIDS_FILE, `${proc.pid}\n`);
  let out = '';
  const keep = (d) => {
    if (out.length < 1_000_000) out += d;
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise((r) => proc.on('exit', () => r()));
  const d = { proc, output: () => out, exited, logFile };
  daemons.push(d);
  return d;
}

async function killAll() {
  for (const d of daemons) {
    if (d.proc.exitCode === null && d.proc.signalCode === null) {
      try {
        process.kill(-d.proc.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  await Promise.race([Promise.all(daemons.map((d) => d.exited)), new Promise((r) => setTimeout(r, 5000))]);
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

async function main() {
  const tmp = mkdtempSync(path.join(process.env.BENCH_TMP || os.tmpdir(), 'orion-bench-scale-'));
  const started = performance.now();
  const overall = setTimeout(async () => {
    process.stderr.write(`scale: timed out after ${opts.timeout}s\n`);
    await killAll();
    process.exit(124);
  }, opts.timeout * 1000);
  try {
    const head = startDaemon(['head', '--host', '127.0.0.1', '--port', '0', '--data-dir', path.join(tmp, 'head'), '--log-level', 'warn']);
    const address = await waitFor('head to listen', () => /orion head listening on (\S+)/.exec(head.output())?.[1], 30_000);
    for (let i = 0; i < opts.nodes; i++) {
      const args = ['node', '--head', address, '--id', `b${i}`, '--slots', String(opts.slots), '--work-dir', path.join(tmp, `n${i}`), '--log-level', 'warn'];
      if (opts.sandbox === 'off') args.push('--no-sandbox');
      startDaemon(args);
    }
    const cluster = new ClusterClient(address, credentials.createInsecure());
    await waitFor(`${opts.nodes} active nodes`, async () => {
      const r = await unary(cluster, 'listNodes', { status: NodeStatus.NODE_STATUS_ACTIVE });
      return r.nodes.length >= opts.nodes;
    }, 30_000 + opts.nodes * 3_000);
    cluster.close();
    const rssIdleKb = vmHwmKb(head.proc.pid);

    // Unique actions: a salt in argv (`true` ignores it; `sh -c 'sleep S' SALT` too), empty input root.
    const salt = randomBytes(6).toString('hex');
    const blobs = [];
    const actionDigests = [];
    for (let i = 0; i < opts.actions; i++) {
      const argv = opts.mode === 'dispatch' ? ['true', `${salt}-${i}`] : ['/bin/sh', '-c', `sleep ${opts.sleep}`, `${salt}-${i}`];
      const command = Buffer.from(re.Command.encode(re.Command.fromPartial({ arguments: argv, environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }], outputPaths: [] })).finish());
      const commandDigest = digestOf(command);
      const action = Buffer.from(re.Action.encode(re.Action.fromPartial({ commandDigest, inputRootDigest: EMPTY_DIGEST })).finish());
      const actionDigest = digestOf(action);
      blobs.push({ digest: commandDigest, data: command }, { digest: actionDigest, data: action });
      actionDigests.push(actionDigest);
    }
    const opt = { 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20 };
    const cas = new re.ContentAddressableStorageClient(address, credentials.createInsecure(), opt);
    for (let i = 0; i < blobs.length; i += 2000) {
      const r = await unary(cas, 'batchUpdateBlobs', { instanceName: '', requests: blobs.slice(i, i + 2000).map((b) => ({ digest: b.digest, data: b.data, compressor: 0 })), digestFunction: 0 });
      const bad = r.responses.find((x) => x.status && x.status.code !== 0);
      if (bad) throw new Error(`BatchUpdateBlobs: ${bad.status.message}`);
    }
    cas.close();

    const exec = new re.ExecutionClient(address, credentials.createInsecure(), opt);
    let next = 0;
    let done = 0;
    let failed = 0;
    let firstError;
    const workers = new Set();
    let maxHeadKb = 0;
    const sampler = setInterval(() => {
      maxHeadKb = Math.max(maxHeadKb, vmHwmKb(head.proc.pid) ?? 0);
    }, 200);
    const runOne = (d) =>
      new Promise((resolve) => {
        const stream = exec.execute({ instanceName: '', skipCacheLookup: true, actionDigest: d, digestFunction: 0, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [] });
        let ok = false;
        stream.on('data', (op) => {
          if (op.done && op.response) {
            const r = re.ExecuteResponse.decode(op.response.value);
            ok = (r.status?.code ?? 0) === 0 && r.result?.exitCode === 0;
            if (!ok && !firstError) firstError = r.status?.message || `exit code ${r.result?.exitCode}`;
          }
        });
        stream.on('error', (err) => {
          if (!firstError) firstError = err.message;
          resolve(false);
        });
        stream.on('end', () => resolve(ok));
      });
    const cpu0 = daemons.map((d) => cpuSeconds(d.proc.pid));
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    await new Promise((resolveAll) => {
      const pump = () => {
        while (workers.size < opts.window && next < actionDigests.length) {
          const p = runOne(actionDigests[next++]).then((ok) => {
            workers.delete(p);
            done++;
            if (!ok) failed++;
            if (done === actionDigests.length) resolveAll();
            else pump();
          });
          workers.add(p);
        }
      };
      pump();
    });
    const wallS = (performance.now() - t0) / 1000;
    const cpu1 = daemons.map((d) => cpuSeconds(d.proc.pid));
    const clientCpu = process.cpuUsage(client0);
    const headCpuS = cpu1[0].self - cpu0[0].self;
    const nodesCpuS = cpu1.slice(1).reduce((a, c, i) => a + c.self - cpu0[i + 1].self + c.children - cpu0[i + 1].children, 0);
    clearInterval(sampler);
    exec.close();
    const headPeakKb = Math.max(maxHeadKb, vmHwmKb(head.proc.pid) ?? 0);
    const nodeKbs = daemons.slice(1).map((d) => vmHwmKb(d.proc.pid) ?? 0);
    const out = {
      mode: opts.mode,
      actions: opts.actions,
      nodes: opts.nodes,
      slotsPerNode: opts.slots,
      window: opts.window,
      sandbox: opts.sandbox,
      failed,
      firstError,
      wallSeconds: wallS,
      actionsPerSecond: opts.actions / wallS,
      headPeakRssKb: headPeakKb,
      headIdleRssKb: rssIdleKb,
      nodePeakRssKbMax: Math.max(...nodeKbs),
      // Where the machine's CPU went during the submit-to-last-completion window.
      headCpuSeconds: headCpuS,
      headCpuMsPerAction: (headCpuS * 1000) / opts.actions,
      nodesCpuSeconds: nodesCpuS,
      clientCpuSeconds: (clientCpu.user + clientCpu.system) / 1e6,
      cores: os.availableParallelism(),
      totalSeconds: (performance.now() - started) / 1000,
    };
    if (opts.mode === 'sleep') {
      out.sleepSeconds = opts.sleep;
      out.idealSeconds = (opts.actions * opts.sleep) / (opts.nodes * opts.slots);
      out.efficiency = out.idealSeconds / wallS;
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    clearTimeout(overall);
    await killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  async (err) => {
    process.stderr.write(`scale: ${err.stack || err}\n`);
    await killAll();
    process.exit(1);
  },
);
