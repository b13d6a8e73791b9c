import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { createBwrapRunner, probeBwrap } from '../../sandbox/bwrap-runner.js';
import { createProcessRunner, getDefaultLauncher, MAX_OUTPUT, type ActionRunner, type RunSpec } from '../../sandbox/runner.js';
import { createNodeLauncher } from '../../sandbox/launcher.js';
import { createHelperLauncher, findSpawnHelper } from '../../sandbox/spawn-helper.js';
import { isRunning, waitUntilGone } from '../helpers/processes.js';

const ENV = { PATH: '/usr/bin:/bin' };

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-runner-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

/** Waits until `file` holds `n` complete lines of pids. */
async function readPids(file: string, n: number): Promise<number[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const lines = (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    if (lines.length >= n) return lines.map(Number);
    if (Date.now() > deadline) throw new Error(`only ${lines.length} of ${n} pids appeared in ${file}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Host pids of processes whose command line contains `marker` (works across pid namespaces). */
function pidsWithArg(marker: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').includes(marker) && isRunning(Number(entry))) out.push(Number(entry));
    } catch {
      // The process went away while we looked.
    }
  }
  return out;
}

const HELPER = findSpawnHelper();

it('finds the orion-spawn helper that `make build` compiles (the runners below use it)', () => {
  expect(HELPER).toBeDefined();
  expect(getDefaultLauncher().kind).toBe('helper');
});

// Every case, with the orion-spawn helper (what daemons and `orion build` use) and with Node's own spawn.
describe.each([
  ['orion-spawn helper', () => createHelperLauncher(HELPER!, { maxOutputBytes: MAX_OUTPUT })],
  ['node spawn', () => createNodeLauncher()],
] as const)('process runner (%s)', (_name, launcher) => {
  const runner = createProcessRunner(launcher());
  const run = (argv: string[], extra: Partial<RunSpec> = {}) => runner.run({ argv, cwd: tmp, env: ENV, ...extra });

  it('reports the exit code of the command', async () => {
    expect((await run(['sh', '-c', 'exit 0'])).exitCode).toBe(0);
    const r = await run(['sh', '-c', 'exit 7']);
    expect(r.exitCode).toBe(7);
    expect(r.timedOut).toBe(false);
  });

  it('reports death by signal as 128 + the signal number', async () => {
    expect((await run(['sh', '-c', 'kill -TERM $$'])).exitCode).toBe(143);
    expect((await run(['sh', '-c', 'kill -KILL $$'])).exitCode).toBe(137);
  });

  it('captures stdout and stderr separately and byte for byte', async () => {
    const r = await run(['sh', '-c', "printf 'out\\000\\377\\n'; printf 'err line\\n' >&2; printf 'no newline'"]);
    expect(r.stdout).toEqual(Buffer.from([...Buffer.from('out'), 0, 0xff, 0x0a, ...Buffer.from('no newline')]));
    expect(r.stderr.toString()).toBe('err line\n');
  });

  it('gives the command exactly the environment of the spec, nothing inherited', async () => {
    process.env.ORION_RUNNER_LEAK = 'should not be seen';
    try {
      const r = await run(['sh', '-c', 'env | grep -v "^PWD=\\|^SHLVL=\\|^_=" | sort'], { env: { ...ENV, ONLY: 'me' } });
      expect(r.stdout.toString()).toBe('ONLY=me\nPATH=/usr/bin:/bin\n');
    } finally {
      delete process.env.ORION_RUNNER_LEAK;
    }
  });

  it('runs in the host directory that a sandbox path maps to', async () => {
    await mkdir(path.join(tmp, 'root/sub'), { recursive: true });
    const r = await run(['pwd'], { cwd: '/project/sub', root: { hostDir: path.join(tmp, 'root'), sandboxDir: '/project' } });
    expect(r.stdout.toString()).toBe(`${path.join(tmp, 'root/sub')}\n`);
  });

  it('fails with FAILED_PRECONDITION when the program does not exist', async () => {
    const err = await failure(run(['/no/such/compiler', '-c', 'x.c']));
    expect(err.code).toBe(Code.FAILED_PRECONDITION);
    expect(err.message).toMatch(/^cannot run "\/no\/such\/compiler": /);
  });

  it('rejects an empty command line with INVALID_ARGUMENT', async () => {
    const err = await failure(run([]));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toBe('empty command line');
  });

  it('does not start a command whose signal already aborted', async () => {
    const c = new AbortController();
    c.abort();
    const marker = path.join(tmp, 'started');
    const err = await failure(run(['touch', marker], { signal: c.signal }));
    expect(err.code).toBe(Code.CANCELLED);
    expect(err.message).toBe('action cancelled before it started');
    await expect(readFile(marker)).rejects.toThrow(/ENOENT/);
  });

  it('kills the whole process group when the signal aborts, and reports CANCELLED', async () => {
    const pidFile = path.join(tmp, 'pids');
    const c = new AbortController();
    const running = run(['sh', '-c', 'echo $$ >> pids; sleep 100 & echo $! >> pids; (sleep 100; true) & echo $! >> pids; wait'], { signal: c.signal });
    const pids = await readPids(pidFile, 3);
    expect(pids.every(isRunning)).toBe(true);
    const t0 = Date.now();
    c.abort();
    const err = await failure(running);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(err.code).toBe(Code.CANCELLED);
    expect(err.message).toBe('action cancelled');
    expect(await waitUntilGone(pids)).toEqual([]);
  });

  it('kills the process group when the command runs past its timeout', async () => {
    const r = await run(['sh', '-c', 'echo $$ > pids; sleep 100 & echo $! >> pids; wait'], { timeoutMs: 300 });
    expect(r.timedOut).toBe(true);
    expect(r.exitCode).toBe(137);
    const pids = await readPids(path.join(tmp, 'pids'), 2);
    expect(await waitUntilGone(pids)).toEqual([]);
  });

  it('leaves no background process of a command behind after it exits', async () => {
    const r = await run(['sh', '-c', 'sleep 100 >/dev/null 2>&1 & echo $!']);
    expect(r.exitCode).toBe(0);
    const pid = Number(r.stdout.toString().trim());
    expect(await waitUntilGone([pid])).toEqual([]);
  });

  it('leaves no process behind that left the group (setsid) but works in the action directory', async () => {
    const r = await run(['sh', '-c', 'setsid sleep 100 >/dev/null 2>&1 & echo $!'], { root: { hostDir: tmp, sandboxDir: tmp } });
    expect(r.exitCode).toBe(0);
    const pid = Number(r.stdout.toString().trim());
    expect(await waitUntilGone([pid])).toEqual([]);
  });
});

describe('bubblewrap runner', () => {
  let server: net.Server;
  let port: number;
  let accepted = 0;

  beforeAll(async () => {
    // bubblewrap is part of Orion's setup (scripts/install-system-deps.sh): its absence is a failure, not a skip.
    const probe = await probeBwrap();
    if (!probe.ok) throw new Error(`bubblewrap cannot sandbox on this machine: ${probe.reason}`);
    server = net.createServer((s) => {
      accepted++;
      s.end('hello\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((r) => server?.close(r));
  });

  const bwrap: ActionRunner = createBwrapRunner(createProcessRunner());
  const sandboxDir = '/orion-sandbox/project';
  const inSandbox = async (script: string, extra: Partial<RunSpec> = {}, shell = 'sh') => {
    const hostDir = path.join(tmp, 'root');
    await mkdir(path.join(hostDir, 'src'), { recursive: true });
    return bwrap.run({ argv: [shell, '-c', script], cwd: `${sandboxDir}/src`, root: { hostDir, sandboxDir }, env: ENV, ...extra });
  };

  it('is the runner kind "bwrap"', () => {
    expect(bwrap.kind).toBe('bwrap');
  });

  it('shows the command its input root at the sandbox path', async () => {
    await mkdir(path.join(tmp, 'root/src'), { recursive: true });
    await writeFile(path.join(tmp, 'root/src/input.c'), 'int x;\n');
    const r = await inSandbox('pwd; cat input.c; echo made > out.o');
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe(`${sandboxDir}/src\nint x;\n`);
    // Outputs land in the host directory.
    expect(await readFile(path.join(tmp, 'root/src/out.o'), 'utf8')).toBe('made\n');
  });

  it("cannot read the node's environment through /proc/1/environ (its own PID namespace, a clean environment)", async () => {
    process.env.ORION_TEST_NODE_SECRET = 'node-secret-value';
    try {
      const r = await inSandbox("for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null | tr '\\0' '\\n'; done; echo done");
      expect(r.stdout.toString()).toContain('done');
      expect(r.stdout.toString()).not.toContain('node-secret-value');
    } finally {
      delete process.env.ORION_TEST_NODE_SECRET;
    }
  });

  it('hides /etc but for what a toolchain reads: a credential kept under /etc is not readable, the compiler still runs', async () => {
    const secret = `/etc/orion-sandbox-probe-${process.pid}.key`;
    await writeFile(secret, 'node private key\n', { mode: 0o600 });
    try {
      const r = await inSandbox(`cat ${secret}; echo rc=$?; test -e /etc/alternatives/cc && echo alternatives; echo 'int main(void){return 0;}' > t.c && cc -c t.c -o t.o && echo compiled`);
      expect(r.stdout.toString()).not.toContain('node private key');
      expect(r.stdout.toString()).toContain('rc=1');
      expect(r.stdout.toString()).toContain('alternatives');
      expect(r.stdout.toString()).toContain('compiled');
    } finally {
      await rm(secret, { force: true });
    }
  });

  it('runs the command unprivileged, so a read-only input (a hard link into the CAS) cannot be written even when the node is root', async () => {
    await mkdir(path.join(tmp, 'root/src'), { recursive: true });
    const input = path.join(tmp, 'root/src/cached.h');
    await writeFile(input, 'original\n', { mode: 0o444 });
    const r = await inSandbox('echo tampered >> cached.h; echo rc=$?; id -u');
    expect(r.stdout.toString()).toContain('rc=2');
    expect(r.stdout.toString().trim().split('\n').at(-1)).toBe('65534');
    expect(await readFile(input, 'utf8')).toBe('original\n');
  });

  it('cannot reach the network: only a loopback interface of its own, and the host server is unreachable', async () => {
    const host = await createProcessRunner().run({
      argv: ['bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port} && head -n1 <&3`],
      cwd: tmp,
      env: ENV,
    });
    expect(host.stdout.toString()).toBe('hello\n');
    const before = accepted;
    const r = await inSandbox(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; exec 3<>/dev/tcp/127.0.0.1/${port} && echo connected`, {}, 'bash');
    expect(r.stdout.toString()).toBe('lo\n');
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr.toString()).toContain('Connection refused');
    expect(accepted).toBe(before);
  });

  it('has a private /tmp', async () => {
    const marker = path.join(os.tmpdir(), `orion-host-marker-${process.pid}`);
    await writeFile(marker, 'host');
    try {
      const r = await inSandbox(`ls -A /tmp; test ! -e ${marker} && echo private; echo sandbox > /tmp/from-sandbox`);
      expect(r.exitCode).toBe(0);
      expect(r.stdout.toString()).toBe('private\n');
      await expect(readFile(path.join(os.tmpdir(), 'from-sandbox'))).rejects.toThrow(/ENOENT/);
    } finally {
      await rm(marker, { force: true });
    }
  });

  it('cannot see or signal host processes (own PID namespace)', async () => {
    const r = await inSandbox(`kill -0 ${process.pid} 2>/dev/null && echo visible || echo hidden`);
    expect(r.stdout.toString()).toBe('hidden\n');
  });

  it('sees the system toolchain read-only', async () => {
    const r = await inSandbox('test -x /usr/bin/env && touch /usr/orion-write-test 2>/dev/null && echo writable || echo read-only');
    expect(r.stdout.toString()).toBe('read-only\n');
  });

  it('kills every process in the sandbox when the signal aborts', async () => {
    const marker = `${1000 + (process.pid % 1000)}.4242`;
    const c = new AbortController();
    const running = inSandbox(`sleep ${marker} & sleep ${marker} & wait`, { signal: c.signal });
    const deadline = Date.now() + 5_000;
    while (pidsWithArg(marker).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const pids = pidsWithArg(marker);
    expect(pids).toHaveLength(2);
    c.abort();
    const err = await failure(running);
    expect(err.code).toBe(Code.CANCELLED);
    expect(await waitUntilGone(pids)).toEqual([]);
  });

  it('kills every process in the sandbox when the command times out', async () => {
    const marker = `${1000 + (process.pid % 1000)}.4343`;
    const r = await inSandbox(`sleep ${marker} & sleep ${marker} & wait`, { timeoutMs: 500 });
    expect(r.timedOut).toBe(true);
    expect(await waitUntilGone(pidsWithArg(marker))).toEqual([]);
  });
});

describe('process limit (pids cgroup)', () => {
  it('stops a fork bomb at the limit; the action fails and no process of it survives', async () => {
    const { createPidsLimitRunner, probePidsCgroup } = await import('../../sandbox/pids-limit-runner.js');
    const cgroup = await probePidsCgroup();
    if (!cgroup) throw new Error('no writable pids cgroup on this machine: the node runs without a process limit here');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-pids-'));
    try {
      // The limit applies outside the sandbox: bwrap itself joins the group, so everything in it counts.
      const limited = createPidsLimitRunner(createProcessRunner(), cgroup, 64);
      const runner = createBwrapRunner(limited);
      // A bounded fork bomb (dash, which does not retry a failed fork): each process tries to start two
      // more, 12 levels deep (8190 if unchecked);
      // the survivors report how many forks failed.
      const script = 'bomb() { [ "$1" -gt 0 ] || return 0; bomb $(($1-1)) & bomb $(($1-1)) & wait; }; bomb 12 2>/tmp/errs; grep -ci "fork" /tmp/errs; true';
      const r = await runner.run({ argv: ['sh', '-c', script], cwd: '/w', root: { hostDir: dir, sandboxDir: '/w' }, env: { PATH: '/usr/bin:/bin' }, timeoutMs: 30_000 });
      expect(r.timedOut).toBe(false);
      expect(Number(r.stdout.toString().trim())).toBeGreaterThan(0);
      const after = await runner.run({ argv: ['sh', '-c', 'echo clean'], cwd: '/w', root: { hostDir: dir, sandboxDir: '/w' }, env: { PATH: '/usr/bin:/bin' } });
      expect(after.stdout.toString()).toBe('clean\n');
      await limited.close();
      expect(readdirSync(cgroup.parent).filter((g) => g.startsWith(`a${process.pid}-`))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("lends a sandboxed action's group to the next one at once, its pid namespace's charge not yet released, and the next action still gets its whole limit", async () => {
    const { createPidsLimitRunner, probePidsCgroup } = await import('../../sandbox/pids-limit-runner.js');
    const cgroup = (await probePidsCgroup())!;
    const limited = createPidsLimitRunner(createProcessRunner(createHelperLauncher(findSpawnHelper()!)), cgroup, 8);
    const runner = createBwrapRunner(limited);
    const run = (script: string) => runner.run({ argv: ['sh', '-c', script], cwd: '/w', root: { hostDir: tmp, sandboxDir: '/w' }, env: ENV });
    const groups = () => readdirSync(cgroup.parent).filter((g) => g.startsWith(`a${process.pid}-`));
    try {
      // Each bwrap leaves its pid namespace's first process counted in pids.current for a second or
      // two after it exited (Linux frees the namespace later): the group is lent again all the same.
      for (let i = 0; i < 3; i++) {
        expect((await run('echo ran')).stdout.toString()).toBe('ran\n');
        await new Promise((r) => setTimeout(r, 60));
      }
      expect(groups()).toHaveLength(1);
      const group = path.join(cgroup.parent, groups()[0]!);
      expect(Number(readFileSync(path.join(group, 'pids.current'), 'latin1'))).toBeGreaterThan(1);
      // 8 processes: bwrap, its pid 1, the shell and 5 sleeps; a 6th sleep cannot start.
      const fits = await run('for i in 1 2 3 4 5; do sleep 0.2 & done; wait; echo ok');
      expect(fits.exitCode).toBe(0);
      expect(fits.stdout.toString()).toBe('ok\n');
      await new Promise((r) => setTimeout(r, 60));
      const over = await run('for i in 1 2 3 4 5 6; do sleep 0.2 & done; wait; echo ok');
      expect(over.exitCode).not.toBe(0);
      expect(groups()).toEqual([path.basename(group)]);
    } finally {
      await limited.close();
    }
    expect(groups()).toEqual([]);
  });

  it('lends an emptied group to the next action, makes another for one running alongside, and removes them all on close', async () => {
    const { createPidsLimitRunner, probePidsCgroup } = await import('../../sandbox/pids-limit-runner.js');
    const cgroup = (await probePidsCgroup())!;
    const runner = createPidsLimitRunner(createProcessRunner(), cgroup, 32);
    const groupOf = async (argv: string[]) => {
      const r = await runner.run({ argv, cwd: tmp, env: ENV });
      return /^\d+:pids:(\S+)$/m.exec(r.stdout.toString())![1]!;
    };
    const first = await groupOf(['cat', '/proc/self/cgroup']);
    expect(first).toMatch(new RegExp(`/a${process.pid}-\\d+$`));
    // Started by the spawn helper, the group holds its keeper too: one more than the action's 32.
    expect(getDefaultLauncher().joinsCgroup).toBe(true);
    expect(readFileSync(path.join(cgroup.parent, path.basename(first), 'pids.max'), 'utf8').trim()).toBe('33');
    // Given back in the background once empty: wait for it.
    await new Promise((r) => setTimeout(r, 100));
    expect(await groupOf(['cat', '/proc/self/cgroup'])).toBe(first);
    await new Promise((r) => setTimeout(r, 100));
    const both = await Promise.all([groupOf(['sh', '-c', 'sleep 0.3; cat /proc/self/cgroup']), groupOf(['sh', '-c', 'sleep 0.3; cat /proc/self/cgroup'])]);
    expect(new Set(both).size).toBe(2);
    expect(both).toContain(first);
    await runner.close();
    expect(readdirSync(cgroup.parent).filter((g) => g.startsWith(`a${process.pid}-`))).toEqual([]);
  });

  it.each([
    ['the spawn helper (it joins the group itself)', () => createHelperLauncher(findSpawnHelper()!)],
    ["Node's spawn (a shell joins the group, then becomes the command)", () => createNodeLauncher()],
  ])('puts the command and everything it starts in its group, started by %s', async (_, launcher) => {
    const { createPidsLimitRunner, probePidsCgroup } = await import('../../sandbox/pids-limit-runner.js');
    const cgroup = (await probePidsCgroup())!;
    const inner = createProcessRunner(launcher());
    const runner = createPidsLimitRunner(inner, cgroup, 32);
    const r = await runner.run({ argv: ['sh', '-c', 'grep pids: /proc/self/cgroup; (grep pids: /proc/self/cgroup)'], cwd: tmp, env: ENV });
    const lines = r.stdout.toString().trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`:pids:/.*/a${process.pid}-\\d+$`));
    expect(lines[1]).toBe(lines[0]);
    // A group that cannot be joined fails the start instead of running the command unlimited.
    if (inner.joinsCgroup) {
      const err = await inner.run({ argv: ['true'], cwd: tmp, env: ENV, cgroupProcs: path.join(tmp, 'no-such-group/cgroup.procs') }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OrionError);
      expect((err as OrionError).message).toMatch(/cannot run "true".*ENOENT/);
    }
    await runner.close();
  });

  it('ends a process the action left running in a new session and another directory (its cgroup still holds it)', async () => {
    const { createPidsLimitRunner, probePidsCgroup } = await import('../../sandbox/pids-limit-runner.js');
    const cgroup = (await probePidsCgroup())!;
    const inner = createProcessRunner(createHelperLauncher(findSpawnHelper()!));
    const runner = createPidsLimitRunner(inner, cgroup, 32);
    const marker = `${1000 + (process.pid % 1000)}.4545`;
    const r = await runner.run({ argv: ['sh', '-c', `cd / && setsid sleep ${marker} > /dev/null 2>&1 & echo $!; sleep 0.2`], cwd: tmp, root: { hostDir: tmp, sandboxDir: tmp }, env: ENV });
    const pid = Number(r.stdout.toString().trim());
    expect(pid).toBeGreaterThan(0);
    expect(await waitUntilGone([pid])).toEqual([]);
    expect(pidsWithArg(marker)).toEqual([]);
    await runner.close();
  });

  it("starts the commands through the group's keeper: born in the group, the helper's children, the keeper neither killed with their processes nor counted against the action", async () => {
    const { createPidsLimitRunner, probePidsCgroup } = await import('../../sandbox/pids-limit-runner.js');
    const cgroup = (await probePidsCgroup())!;
    const launcher = createHelperLauncher(findSpawnHelper()!);
    const inner = createProcessRunner(launcher);
    const runner = createPidsLimitRunner(inner, cgroup, 5);
    // The command's parent and its group.
    const probe = ['sh', '-c', 'echo $PPID; grep pids: /proc/self/cgroup'];
    const first = (await runner.run({ argv: probe, cwd: tmp, env: ENV })).stdout.toString().trim().split('\n');
    const group = path.join(cgroup.parent, path.basename(first[1]!.split(':')[2]!));
    const procs = path.join(group, 'cgroup.procs');
    const keeper = launcher.keeperOf!(procs)!;
    expect(keeper).toBeGreaterThan(0);
    expect(runner.keeperOf!(procs)).toBe(keeper);
    // The command is the helper's child (its exit is collected there), not the keeper's.
    const helperPid = Number(first[0]);
    expect(helperPid).not.toBe(keeper);
    expect(readFileSync(`/proc/${keeper}/stat`, 'latin1').split(') ')[1]!.split(' ')[1]).toBe(String(helperPid));
    // Between actions the keeper alone stays in the group, and the next action is started there by it.
    await new Promise((r) => setTimeout(r, 100));
    expect(readFileSync(procs, 'latin1').trim()).toBe(String(keeper));
    expect((await runner.run({ argv: probe, cwd: tmp, env: ENV })).stdout.toString().trim().split('\n')).toEqual(first);
    // What an action leaves running is killed when it exits; its group's keeper is not.
    await new Promise((r) => setTimeout(r, 100));
    const left = Number((await runner.run({ argv: ['sh', '-c', 'sleep 30 & echo $!'], cwd: tmp, env: ENV })).stdout.toString());
    expect(await waitUntilGone([left])).toEqual([]);
    expect(isRunning(keeper)).toBe(true);
    expect(launcher.keeperOf!(procs)).toBe(keeper);
    // The limit is the action's own: 5 processes run (the shell and 4 sleeps), a 6th cannot start.
    const five = await runner.run({ argv: ['sh', '-c', 'for i in 1 2 3 4; do sleep 0.3 & done; wait; echo ok'], cwd: tmp, env: ENV });
    expect(five.stderr.toString() + five.stdout.toString()).toBe('ok\n');
    const six = await runner.run({ argv: ['sh', '-c', 'for i in 1 2 3 4 5; do sleep 0.3 & done; wait; echo ok'], cwd: tmp, env: ENV });
    expect(six.stderr.toString()).toMatch(/fork/i);
    // A keeper that died is replaced by the next command for its group. The groups the runs above
    // used go back to the pool once their processes are gone (polled every 20 ms); wait for that, so
    // the probe's group is the last one given back and the next command takes it again.
    const ours = () => readdirSync(cgroup.parent).filter((g) => g.startsWith(`a${process.pid}-`)).map((g) => path.join(cgroup.parent, g));
    const onlyKeepers = () =>
      ours().every((g) => {
        const procs = path.join(g, 'cgroup.procs');
        try {
          return readFileSync(procs, 'latin1').trim() === String(launcher.keeperOf!(procs) ?? '');
        } catch {
          return true; // removed meanwhile
        }
      });
    for (let i = 0; i < 100 && !onlyKeepers(); i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    const idle = (await runner.run({ argv: probe, cwd: tmp, env: ENV })).stdout.toString().trim().split('\n')[1]!;
    const idleProcs = path.join(cgroup.parent, path.basename(idle.split(':')[2]!), 'cgroup.procs');
    const idleKeeper = launcher.keeperOf!(idleProcs)!;
    await new Promise((r) => setTimeout(r, 100));
    process.kill(idleKeeper, 'SIGKILL');
    expect(await waitUntilGone([idleKeeper])).toEqual([]);
    expect((await runner.run({ argv: probe, cwd: tmp, env: ENV })).stdout.toString().trim().split('\n')[1]).toBe(idle);
    expect(launcher.keeperOf!(idleProcs)).toBeGreaterThan(0);
    expect(launcher.keeperOf!(idleProcs)).not.toBe(idleKeeper);
    // Closing ends the keepers and removes their groups.
    const keepers = readdirSync(cgroup.parent).filter((g) => g.startsWith(`a${process.pid}-`)).map((g) => launcher.keeperOf!(path.join(cgroup.parent, g, 'cgroup.procs'))).filter((k) => k !== undefined);
    expect(keepers.length).toBeGreaterThan(0);
    await runner.close();
    expect(readdirSync(cgroup.parent).filter((g) => g.startsWith(`a${process.pid}-`))).toEqual([]);
    expect(await waitUntilGone(keepers as number[])).toEqual([]);
  });

  it('removes the empty groups a node killed without closing left behind, and only those', async () => {
    const { createPidsLimitRunner, probePidsCgroup } = await import('../../sandbox/pids-limit-runner.js');
    const cgroup = (await probePidsCgroup())!;
    const gone = spawn('true');
    await new Promise((r) => gone.once('exit', r));
    const alive = spawn('sleep', ['30']);
    try {
      mkdirSync(path.join(cgroup.parent, `a${gone.pid}-7`), { recursive: true });
      mkdirSync(path.join(cgroup.parent, `a${alive.pid}-7`), { recursive: true });
      const runner = createPidsLimitRunner(createProcessRunner(), cgroup, 32);
      expect((await runner.run({ argv: ['true'], cwd: tmp, env: ENV })).exitCode).toBe(0);
      const left = readdirSync(cgroup.parent);
      expect(left).not.toContain(`a${gone.pid}-7`);
      expect(left).toContain(`a${alive.pid}-7`);
      await runner.close();
    } finally {
      alive.kill('SIGKILL');
      rmdirSync(path.join(cgroup.parent, `a${alive.pid}-7`));
    }
  });
});
