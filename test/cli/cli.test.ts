import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/cli.js';
import { NodeStatus } from '../../proto/gen/orion/v1/cluster.js';
import { closedPort, listNodes, startHeadProcess, startOrion, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';

async function cli(...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { code, stdout, stderr };
}

describe('orion command line: usage errors exit 2 and name the flag', () => {
  it.each([
    [['head', '--port', '99999'], 'orion: --port: port must be 0..65535, got 99999\n'],
    [['head', '--port', 'http'], 'orion: --port: expected a port number, got "http"\n'],
    [['head', '--heartbeat-timeout', '10x'], 'orion: --heartbeat-timeout: invalid duration "10x" (examples: 500ms, 10s, 2m)\n'],
    [['head', '--heartbeat-timeout', '0s'], 'orion: --heartbeat-timeout: duration must be positive, got "0s"\n'],
    [['head', '--action-cache-size', 'lots'], 'orion: --action-cache-size: invalid size "lots" (examples: 512MiB, 2GiB, 100MB)\n'],
    [['head', '--action-cache-size', '1MiB'], 'orion: --action-cache-size: must be at least 16777216 bytes, got "1MiB"\n'],
    [['node', '--head', 'nonsense'], 'orion: --head: expected HOST:PORT (for example 127.0.0.1:50050), got "nonsense"\n'],
    [['node', '--head', '127.0.0.1:0'], 'orion: --head: expected HOST:PORT (for example 127.0.0.1:50050), got "127.0.0.1:0"\n'],
    [['node', '--head', '127.0.0.1:50050', '--slots', '0'], 'orion: --slots: must be between 1 and 1000000, got 0\n'],
    [['node', '--head', '127.0.0.1:50050', '--slots', 'many'], 'orion: --slots: expected a positive integer, got "many"\n'],
    [['status', '--head', 'host-without-port'], 'orion: --head: expected HOST:PORT (for example 127.0.0.1:50050), got "host-without-port"\n'],
  ])('orion %j', async (argv, message) => {
    const r = await cli(...argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(message);
    expect(r.stdout).toBe('');
  });

  it('rejects `node` without --head, naming the option', async () => {
    const r = await cli('node');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: required option '--head <host:port>' not specified");
  });

  it('rejects `status` without --head, naming the option', async () => {
    const r = await cli('status');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: required option '--head <host:port>' not specified");
  });

  it('rejects an unknown --status value, listing the allowed ones', async () => {
    const r = await cli('status', '--head', '127.0.0.1:1', '--status', 'sleeping');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: option '--status <status>' argument 'sleeping' is invalid. Allowed choices are active, inactive, disconnected.");
  });

  it('rejects an unknown option and an unknown command', async () => {
    const opt = await cli('head', '--prot', '1');
    expect(opt.code).toBe(2);
    expect(opt.stderr).toContain("error: unknown option '--prot'");
    const cmd = await cli('haed');
    expect(cmd.code).toBe(2);
    expect(cmd.stderr).toContain("error: unknown command 'haed'");
  });
});

describe('orion command line: help and version', () => {
  it.each([
    ['head', ['--host <addr>', '--port <n>', '--data-dir <dir>', '--heartbeat-timeout <duration>', '--log-level <level>', 'example: orion head']],
    ['node', ['--head <host:port>', '--slots <n>', '--work-dir <dir>', '--id <id>', '--require-sandbox', '--no-sandbox', '--log-level <level>', 'example: orion node']],
    ['status', ['--head <host:port>', '--status <status>', 'example: orion status']],
  ])('`orion %s --help` lists every option and exits 0', async (command, options) => {
    const r = await cli(command, '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: orion ${command} [options]`);
    for (const o of options) expect(r.stdout).toContain(o);
    expect(r.stderr).toBe('');
  });

  it('`orion --help` lists the commands', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    for (const c of ['head', 'node', 'status']) expect(r.stdout).toMatch(new RegExp(`^\\s+${c}\\b`, 'm'));
  });

  it('`orion --version` prints the version', async () => {
    const r = await cli('--version');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('0.1.0\n');
  });
});

describe('orion status against nothing', () => {
  it('fails with exit 1 and a clear message when no head listens at the address', async () => {
    const port = await closedPort();
    const t0 = Date.now();
    const r = await cli('status', '--head', `127.0.0.1:${port}`);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^orion: cannot reach the head at 127\\.0\\.0\\.1:${port}: .*(ECONNREFUSED|No connection established)`));
  });
});

describe('orion head and node as real processes', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  const nodes: Record<string, Daemon> = {};

  beforeAll(async () => {
    tmp = await tempDir('cli');
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '1s']);
    for (const id of ['cli-n1', 'cli-n2']) nodes[id] = startNodeProcess(head.address, id, path.join(tmp.dir, id), ['--slots', '2', '--no-sandbox']);
    await waitForActiveNodes(head.address, 2);
  });

  afterAll(async () => {
    for (const n of Object.values(nodes)) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    await tmp?.cleanup();
  });

  it('`orion status` prints a table with every node and its state', async () => {
    const r = await cli('status', '--head', head.address);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+ADDRESS\s+SLOTS\s+RUNNING\s+LOAD\s+STATUS\s+LAST HEARTBEAT$/);
    const rows = lines.slice(1).map((l) => l.split(/\s+/));
    expect(rows.map((r) => [...r.slice(0, 4), r[5]])).toEqual([
      ['cli-n1', expect.stringMatching(/^127\.0\.0\.1:\d+$/), '2', '0', 'active'],
      ['cli-n2', expect.stringMatching(/^127\.0\.0\.1:\d+$/), '2', '0', 'active'],
    ]);
    // The node's 1-minute load average, as it reported in its heartbeats.
    for (const r of rows) expect(r[4]).toMatch(/^\d+\.\d\d$/);
  });

  it('a second head on the same data directory exits at its start, naming the process that holds it', async () => {
    const second = startOrion(['head', '--port', '0', '--data-dir', path.join(tmp.dir, 'head')]);
    const code = await new Promise<number | null>((r) => second.proc.once('exit', r));
    expect(code).not.toBe(0);
    expect(second.output()).toContain(`is in use by process ${head.proc.pid}`);
    expect(second.output()).not.toContain('listening');
    // The first head still serves.
    expect((await listNodes(head.address)).length).toBe(2);
  });

  it('a node given SIGTERM exits 0, says it stopped, and the head marks it inactive at once', async () => {
    const node = nodes['cli-n1']!;
    const t0 = Date.now();
    const code = await node.kill('SIGTERM');
    expect(code).toBe(0);
    expect(node.output()).toContain('node stopped');
    const gone = await waitFor('the head to mark cli-n1 inactive', async () => (await listNodes(head.address)).find((n) => n.nodeId === 'cli-n1' && n.status === NodeStatus.NODE_STATUS_INACTIVE), 5_000, 20);
    expect(gone.running).toBe(0);
    // The stream close tells the head, well before the 1 s heartbeat timeout would.
    expect(Date.now() - t0).toBeLessThan(1_000);

    const inactive = await cli('status', '--head', head.address, '--status', 'inactive');
    expect(inactive.code).toBe(0);
    const rows = inactive.stdout.trimEnd().split('\n').slice(1);
    expect(rows.map((l) => l.split(/\s+/)[0])).toEqual(['cli-n1']);
    expect(rows[0]).toContain('inactive');
    const active = await cli('status', '--head', head.address, '--status', 'active');
    expect(active.stdout.trimEnd().split('\n').slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['cli-n2']);
    const none = await cli('status', '--head', head.address, '--status', 'disconnected');
    expect(none).toEqual({ code: 0, stdout: 'no disconnected nodes\n', stderr: '' });
  });

  it('the head given SIGTERM exits 0 and logs that it stopped', async () => {
    const code = await head.kill('SIGTERM');
    expect(code).toBe(0);
    expect(head.output()).toContain('"msg":"head stopped"');
    // The remaining node loses its head and keeps running, trying to reconnect.
    await waitFor('the node to notice', () => nodes['cli-n2']!.output().includes('lost the head; reconnecting'), 5_000, 20);
    expect(nodes['cli-n2']!.proc.exitCode).toBeNull();
  });

  it('a node started before its head says it cannot reach it yet (not that it lost it), keeps trying, and registers once the head is up', async () => {
    const port = await closedPort();
    const address = `127.0.0.1:${port}`;
    const early = startNodeProcess(address, 'cli-early', path.join(tmp.dir, 'cli-early'), ['--no-sandbox']);
    nodes['cli-early'] = early;
    await waitFor('the node to say it waits', () => early.output().includes(`"msg":"cannot reach the head at ${address} yet; retrying"`), 10_000, 20);
    expect(early.output()).toContain('ECONNREFUSED');
    expect(early.output()).not.toContain('Resolution note');
    expect(early.output()).not.toContain('lost the head');
    const late = startOrion(['head', '--host', '127.0.0.1', '--port', String(port), '--data-dir', path.join(tmp.dir, 'late-head')]);
    try {
      const [n] = await waitForActiveNodes(address, 1);
      expect(n!.nodeId).toBe('cli-early');
    } finally {
      await late.kill('SIGKILL');
    }
  });
});
