/**
 * A Launcher backed by the orion-spawn helper (sandbox/orion-spawn.c, built into dist/ by
 * `make build`): one small process per daemon starts its actions with posix_spawn, so the
 * daemon neither forks its own address space per action (1.6 ms of CPU at 57 MB of RSS,
 * 3.3 ms at 400 MB, measured) nor waits on its event loop until each child has exec'd.
 * A command given a cgroup is started there by that cgroup's keeper, born in it (no
 * migration per command: 5-15 ms each on cgroup v1, measured; see the C file).
 * The wire format is described in the C file.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Code, OrionError } from '../common/errors.js';
import { MAX_OUTPUT, type ExitStatus, type Launched, type Launcher, type LaunchSpec } from './launcher.js';

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));
const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

/** The helper next to this module's build output (dist/orion-spawn), if it was built. */
export function findSpawnHelper(): string | undefined {
  const env = process.env.ORION_SPAWN_HELPER;
  if (env !== undefined) return env && existsSync(env) ? env : undefined;
  const here = path.dirname(fileURLToPath(import.meta.url));
  // dist/orion.mjs, dist/chunks/*.mjs, dist/sandbox/*.js, or sandbox/*.ts run from source.
  for (const p of [path.join(here, 'orion-spawn'), path.join(here, '..', 'orion-spawn'), path.join(here, '..', 'dist', 'orion-spawn')]) {
    if (existsSync(p)) return p;
  }
  return undefined;
}

interface Pending {
  started?: (pid: number) => void;
  file: string;
  cgroupProcs?: string;
  failed: (err: Error) => void;
  exited?: (s: ExitStatus) => void;
  closed?: (o: { stdout: Buffer; stderr: Buffer }) => void;
  /** Rejects whichever of exit/output is still open (the helper died). */
  lost?: (err: Error) => void;
}

function encodeRequest(id: number, spec: LaunchSpec): Buffer {
  const env = Object.entries(spec.env).map(([k, v]) => `${k}=${v}`);
  const strings = [spec.cwd, spec.file, ...spec.args, ...env, ...(spec.cgroupProcs ? [spec.cgroupProcs] : [])];
  const nul = strings.find((s) => s.includes('\0'));
  if (nul !== undefined) throw new OrionError(Code.INVALID_ARGUMENT, `a command's argument, directory or environment contains a NUL byte: ${JSON.stringify(nul.slice(0, 80))}`);
  const parts = strings.map((s) => Buffer.from(s));
  // id, flags (bit 0: a cgroup.procs path follows the environment), argc, envc, and each string's length and bytes.
  const size = 16 + parts.reduce((n, b) => n + 4 + b.length, 0);
  const buf = Buffer.allocUnsafe(4 + size);
  let o = buf.writeUInt32LE(size, 0);
  o = buf.writeUInt32LE(id, o);
  o = buf.writeUInt32LE(spec.cgroupProcs ? 1 : 0, o);
  const str = (b: Buffer) => {
    o = buf.writeUInt32LE(b.length, o);
    o += b.copy(buf, o);
  };
  str(parts[0]!);
  o = buf.writeUInt32LE(1 + spec.args.length, o);
  for (let i = 1; i <= 1 + spec.args.length; i++) str(parts[i]!);
  o = buf.writeUInt32LE(env.length, o);
  for (let i = 2 + spec.args.length; i < parts.length; i++) str(parts[i]!); // the environment, then the cgroup path
  return buf;
}

export interface HelperLauncherOptions {
  /** Bytes kept per output stream (the helper's limit for every command; default MAX_OUTPUT). */
  maxOutputBytes?: number;
  /** Called when the helper cannot be used (it died, or failed to start); the next launch starts a new one. */
  onError?: (err: Error) => void;
}

/**
 * Starts `helperPath` on first use, and again after it died. While no command is running the
 * helper does not keep this process alive (a finished `orion build` exits).
 */
export function createHelperLauncher(helperPath: string, opts: HelperLauncherOptions = {}): Launcher {
  let helper: { proc: ChildProcessByStdio<Writable, Readable, null>; pending: Map<number, Pending> } | undefined;
  let nextId = 1;
  /** Each cgroup's keeper, by its cgroup.procs path (orion-spawn.c: the process that starts the commands there). */
  const keepers = new Map<string, number>();

  const refHelper = (h: NonNullable<typeof helper>, on: boolean) => {
    const handles = [h.proc, h.proc.stdout, h.proc.stdin] as unknown as { ref(): void; unref(): void }[];
    for (const x of handles) (on ? x.ref : x.unref).call(x);
  };

  function start(): NonNullable<typeof helper> {
    const proc = spawn(helperPath, [String(opts.maxOutputBytes ?? MAX_OUTPUT)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const h = { proc, pending: new Map<number, Pending>() };
    let buf: Buffer = Buffer.alloc(0);
    let dead = false;
    const gone = (why: string) => {
      if (dead) return;
      dead = true;
      if (helper === h) helper = undefined;
      keepers.clear(); // they end with the helper
      const err = new OrionError(Code.INTERNAL, `the orion-spawn helper ${why}`);
      for (const p of h.pending.values()) (p.lost ?? p.failed)(err);
      h.pending.clear();
      opts.onError?.(err);
    };
    proc.on('error', (err) => gone(`could not run: ${err.message}`));
    proc.on('exit', (code, signal) => gone(`exited (${signal ?? `code ${code}`})`));
    proc.stdin.on('error', () => undefined); // its exit reports the failure
    proc.stdout.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      let off = 0;
      while (buf.length - off >= 4) {
        const len = buf.readUInt32LE(off);
        if (buf.length - off - 4 < len) break;
        onReply(h, buf.subarray(off + 4, off + 4 + len));
        off += 4 + len;
      }
      buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
    });
    refHelper(h, false);
    return h;
  }

  function onReply(h: NonNullable<typeof helper>, frame: Buffer) {
    const type = String.fromCharCode(frame[0]!);
    const id = frame.readUInt32LE(1);
    const p = h.pending.get(id);
    if (!p) return;
    if ((type === 'S' || type === 'F') && p.cgroupProcs) {
      const keeper = frame.readInt32LE(9);
      if (keeper > 0) keepers.set(p.cgroupProcs, keeper);
      else keepers.delete(p.cgroupProcs);
    }
    if (type === 'S') {
      p.started?.(frame.readInt32LE(5));
    } else if (type === 'F') {
      const errno = frame.readInt32LE(5);
      h.pending.delete(id);
      const name = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
      p.failed(Object.assign(new Error(`spawn ${p.file} ${name}`), { code: name, errno }));
    } else if (type === 'X') {
      const signalled = frame[5] === 1;
      const n = frame.readUInt32LE(6);
      p.exited?.(signalled ? { code: null, signal: SIGNAL_NAMES.get(n) ?? 'SIGKILL' } : { code: n, signal: null });
    } else if (type === 'C') {
      h.pending.delete(id);
      const outLen = frame.readUInt32LE(5);
      const stdout = Buffer.from(frame.subarray(9, 9 + outLen));
      const errLen = frame.readUInt32LE(9 + outLen);
      const stderr = Buffer.from(frame.subarray(13 + outLen, 13 + outLen + errLen));
      p.closed?.({ stdout, stderr });
    }
    if (h.pending.size === 0) refHelper(h, false);
  }

  return {
    kind: 'helper',
    joinsCgroup: true,
    keeperOf: (procs) => keepers.get(procs),
    launch(spec) {
      const id = nextId++;
      let request: Buffer;
      try {
        request = encodeRequest(id, spec);
      } catch (err) {
        return Promise.reject(err);
      }
      helper ??= start();
      const h = helper;
      if (h.pending.size === 0) refHelper(h, true);
      return new Promise<Launched>((resolve, reject) => {
        const p: Pending = { file: spec.file, cgroupProcs: spec.cgroupProcs, failed: reject };
        p.started = (pid) => {
          let exitOk!: (s: ExitStatus) => void;
          let outOk!: (o: { stdout: Buffer; stderr: Buffer }) => void;
          let exitFail!: (e: Error) => void;
          let outFail!: (e: Error) => void;
          const exit = new Promise<ExitStatus>((ok, fail) => ((exitOk = ok), (exitFail = fail)));
          const output = new Promise<{ stdout: Buffer; stderr: Buffer }>((ok, fail) => ((outOk = ok), (outFail = fail)));
          let exited = false;
          p.exited = (s) => {
            exited = true;
            exitOk(s);
          };
          p.closed = outOk;
          p.lost = (err) => {
            if (!exited) exitFail(err);
            outFail(err);
          };
          // Whoever awaits only one of them must not see the other's rejection as unhandled.
          exit.catch(() => undefined);
          output.catch(() => undefined);
          resolve({ pid, exit, output });
        };
        h.pending.set(id, p);
        h.proc.stdin.write(request);
      });
    },
  };
}
