/**
 * Interoperability: a real Bazel (Debian's bazel-bootstrap) builds fixtures/bazel-workspace
 * with a real `orion head` as its remote executor / remote cache and a real `orion node`
 * running the actions. Assertions are on Bazel's own summary line
 * ("INFO: 11 processes: 6 internal, 5 remote."), on the node's count of executed actions
 * and on the built binary's output.
 *
 * One head, one node, one Bazel server and one output base are shared by all cases; each
 * case starts with `bazel clean` and uses its own --remote_instance_name (the head keeps a
 * separate action cache per instance), so the cases do not see each other's results.
 */
import { chmod, cp, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDigest } from '../../cas/digest.js';
import { REPO, startHeadProcess, startNodeProcess, tempDir, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { casClient } from '../helpers/reapi.js';

const FIXTURE = path.join(REPO, 'fixtures/bazel-workspace');
const RULES_JAVA = '/usr/share/bazel/rules/java';
const INSTALL_HINT = 'run `bash scripts/install-bazel.sh` (as root or with sudo) to install Debian\'s bazel-bootstrap and bazel-rules-java';
const GREETING = 'hello from orion remote execution';
/**
 * The spawns `bazel build //...` runs for the fixture: compile greeting.c and hello.c,
 * archive libgreeting.a, link libgreeting.so and link hello. (Bazel's "internal"
 * processes, such as symlink trees and workspace status, never leave Bazel.)
 */
const SPAWNS = 5;

/** Bazel's closing "INFO: N processes: A kind, B kind." line, as counts per kind. */
function processSummary(output: string): { line: string; total: number; kinds: Record<string, number> } {
  const m = /^INFO: (\d+) process(?:es)?(?:: (.*))?\.$/m.exec(output);
  if (!m) throw new Error(`no "INFO: N processes" line in Bazel's output:\n${output.slice(-4000)}`);
  const kinds: Record<string, number> = {};
  for (const part of (m[2] ?? '').split(', ').filter(Boolean)) {
    const k = /^(\d+) (.+)$/.exec(part);
    if (!k) throw new Error(`unexpected part ${JSON.stringify(part)} in ${JSON.stringify(m[0])}`);
    kinds[k[2]!] = Number(k[1]);
  }
  return { line: m[0], total: Number(m[1]), kinds };
}

/** The spawns of a summary that are neither Bazel-internal nor remote nor remote-cache hits: local runs. */
function localSpawns(kinds: Record<string, number>): number {
  return Object.entries(kinds)
    .filter(([k]) => !['internal', 'remote', 'remote cache hit'].includes(k))
    .reduce((n, [, v]) => n + v, 0);
}

/** Why this machine cannot run the cases, or undefined when Bazel and its Java rules are installed. */
async function bazelMissing(): Promise<Error | undefined> {
  const r = await execa('bazel', ['--version'], { reject: false, env: { HOME: process.env.HOME ?? '/tmp' } });
  if (r.failed) return new Error(`bazel is not installed (${r.shortMessage ?? r.message}): ${INSTALL_HINT}`);
  const rules = await stat(RULES_JAVA).catch(() => undefined);
  if (!rules?.isDirectory()) return new Error(`${RULES_JAVA} is missing: ${INSTALL_HINT}`);
  return undefined;
}

describe('Bazel builds through orion head as its remote executor and remote cache', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  let node: Daemon;
  let workspace: string;
  let outputRoot: string;
  let bazelStarted = false;
  /** Set when Bazel is not installed: every case then fails with it (a missing Bazel must not pass as skipped). */
  let missing: Error | undefined;
  const requireBazel = () => {
    if (missing) throw missing;
  };

  /** Runs `bazel COMMAND ARGS` in the fixture copy; returns Bazel's output (it reports on stderr). */
  async function bazel(command: string, args: string[] = []): Promise<string> {
    bazelStarted = true;
    const startup = [
      `--output_user_root=${outputRoot}`,
      // Ignore the user's ~/.bazelrc; keep Debian's /etc/bazel/bazelrc, which names Bazel's install base.
      '--nohome_rc',
      // A leftover server (the test process died before afterAll) goes away by itself.
      '--max_idle_secs=300',
    ];
    const r = await execa('bazel', [...startup, command, ...args], {
      cwd: workspace,
      reject: false,
      all: true,
      stdin: 'ignore',
      extendEnv: false,
      env: { HOME: tmp.dir, PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8' },
      timeout: 180_000,
    });
    if (r.exitCode !== 0) throw new Error(`bazel ${command} ${args.join(' ')} exited with ${r.exitCode}:\n${String(r.all).slice(-6000)}`);
    return String(r.all);
  }

  /** `bazel build //...` against the head, offline; the extra flags pick the remote mode. */
  function build(extra: string[]): Promise<string> {
    return bazel('build', [
      `--override_repository=rules_java=${RULES_JAVA}`,
      `--override_repository=rules_cc=${path.join(workspace, 'rules_cc')}`,
      // Nothing may come from the network: no repository cache, no downloads.
      '--repository_cache=',
      '--experimental_repository_disable_download',
      // Action keys must not depend on the test runner's environment.
      '--incompatible_strict_action_env',
      '--nosandbox_debug',
      '--color=no',
      '--curses=no',
      ...extra,
      '//...',
    ]);
  }

  /** How many actions the node has finished so far (it logs each one at debug level). */
  const nodeExecutions = () => node.output().split('"msg":"action finished"').length - 1;

  async function runHello(binary: string): Promise<string> {
    const { stdout } = await execa(binary, [], { reject: true });
    return stdout;
  }

  beforeAll(async () => {
    missing = await bazelMissing();
    if (missing) return;
    tmp = await tempDir('bazel');
    workspace = path.join(tmp.dir, 'ws');
    outputRoot = path.join(tmp.dir, 'bazel-root');
    await cp(FIXTURE, workspace, { recursive: true });
    head = await startHeadProcess(path.join(tmp.dir, 'head'));
    node = startNodeProcess(head.address, 'n1', path.join(tmp.dir, 'n1'), ['--slots', '2', '--log-level', 'debug']);
    await waitForActiveNodes(head.address, 1);
  }, 60_000);

  afterAll(async () => {
    if (bazelStarted) await bazel('shutdown').catch(() => undefined);
    await node?.kill('SIGKILL');
    await head?.kill('SIGKILL');
    await tmp?.cleanup();
  }, 60_000);

  it('runs every action of the build remotely on the node and the built binary prints its line', async () => {
    requireBazel();
    await bazel('clean');
    const before = nodeExecutions();
    const out = await build([`--remote_executor=grpc://${head.address}`]);
    const s = processSummary(out);
    expect(s.kinds.remote, s.line).toBe(SPAWNS);
    expect(localSpawns(s.kinds), s.line).toBe(0);
    expect(s.kinds['remote cache hit'], s.line).toBeUndefined();
    expect(nodeExecutions() - before).toBe(SPAWNS);
    expect(out).toContain('INFO: Build completed successfully');
    expect(await runHello(path.join(workspace, 'bazel-bin/hello'))).toBe(GREETING);
  }, 180_000);

  it('serves a rebuild after bazel clean entirely from the action cache', async () => {
    requireBazel();
    const flags = [`--remote_executor=grpc://${head.address}`, '--remote_instance_name=rebuild'];
    await bazel('clean');
    expect(processSummary(await build(flags)).kinds.remote).toBe(SPAWNS);
    await bazel('clean');
    const before = nodeExecutions();
    const s = processSummary(await build(flags));
    expect(s.kinds['remote cache hit'], s.line).toBe(SPAWNS);
    expect(s.kinds.remote, s.line).toBeUndefined();
    expect(localSpawns(s.kinds), s.line).toBe(0);
    expect(nodeExecutions()).toBe(before);
    // The outputs of the cache hits are downloaded and correct.
    expect(await runHello(path.join(workspace, 'bazel-bin/hello'))).toBe(GREETING);
  }, 180_000);

  it('as a remote cache only, uploads the results of actions run locally and hits them after a clean', async () => {
    requireBazel();
    const flags = [`--remote_cache=grpc://${head.address}`, '--remote_instance_name=cache-only'];
    await bazel('clean');
    const before = nodeExecutions();
    const first = processSummary(await build(flags));
    expect(localSpawns(first.kinds), first.line).toBe(SPAWNS);
    expect(first.kinds.remote, first.line).toBeUndefined();
    expect(first.kinds['remote cache hit'], first.line).toBeUndefined();
    await bazel('clean');
    const second = processSummary(await build(flags));
    expect(second.kinds['remote cache hit'], second.line).toBe(SPAWNS);
    expect(localSpawns(second.kinds), second.line).toBe(0);
    expect(nodeExecutions()).toBe(before);
    expect(await runHello(path.join(workspace, 'bazel-bin/hello'))).toBe(GREETING);
  }, 180_000);

  it('keeps a separate action cache per --remote_instance_name', async () => {
    requireBazel();
    const remote = `--remote_executor=grpc://${head.address}`;
    await bazel('clean');
    expect(processSummary(await build([remote, '--remote_instance_name=a'])).kinds.remote).toBe(SPAWNS);
    await bazel('clean');
    const b = processSummary(await build([remote, '--remote_instance_name=b']));
    expect(b.kinds.remote, `instance b must not hit instance a's results: ${b.line}`).toBe(SPAWNS);
    expect(b.kinds['remote cache hit'], b.line).toBeUndefined();
    await bazel('clean');
    const a = processSummary(await build([remote, '--remote_instance_name=a']));
    expect(a.kinds['remote cache hit'], a.line).toBe(SPAWNS);
    expect(await runHello(path.join(workspace, 'bazel-bin/hello'))).toBe(GREETING);
  }, 180_000);

  it('with --remote_download_minimal leaves the outputs in Orion\'s CAS, from where the binary runs', async () => {
    requireBazel();
    const bep = path.join(tmp.dir, 'minimal-bep.json');
    await bazel('clean');
    const before = nodeExecutions();
    const out = await build([`--remote_executor=grpc://${head.address}`, '--remote_instance_name=minimal', '--remote_download_minimal', `--build_event_json_file=${bep}`]);
    const s = processSummary(out);
    expect(s.kinds.remote, s.line).toBe(SPAWNS);
    expect(localSpawns(s.kinds), s.line).toBe(0);
    expect(nodeExecutions() - before).toBe(SPAWNS);
    // Nothing was downloaded...
    await expect(stat(path.join(workspace, 'bazel-bin/hello'))).rejects.toThrow(/ENOENT/);
    // ...Bazel's build events point into the head's CAS instead.
    const events = await readFile(bep, 'utf8');
    const uri = new RegExp(`"name":"hello","uri":"bytestream://${head.address.replace(/\./g, '\\.')}/minimal/blobs/([0-9a-f]{64})/(\\d+)"`).exec(events);
    expect(uri, 'the build events name the binary by a bytestream:// URI on the head').not.toBeNull();
    const cas = casClient(head.address, 'minimal');
    try {
      const chunks: Buffer[] = [];
      for await (const c of cas.getStream(parseDigest(uri![1]!, Number(uri![2])))) chunks.push(Buffer.from(c as Uint8Array));
      const binary = path.join(tmp.dir, 'hello-from-cas');
      await writeFile(binary, Buffer.concat(chunks));
      await chmod(binary, 0o755);
      expect(await runHello(binary)).toBe(GREETING);
    } finally {
      cas.close();
    }
  }, 180_000);
});
