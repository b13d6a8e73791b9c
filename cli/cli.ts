import { setMaxListeners } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { OrionError } from '../common/errors.js';
import { UsageError, parseDuration, parseHostPort, parseNonNegativeInt, parsePort, parsePositiveInt, parseSize } from './options.js';
import { NODE_FAULTS, isNodeFault } from '../node/faults.js';
import { addClientAuthOptions, addHeadSecurityOptions, clientAuthFrom, headSecurityFrom } from './security-options.js';

const wrapParseInt0 = (flag: string) => (v: string) => {
  if (!/^\d+$/.test(v.trim())) throw new UsageError(`${flag}: expected a number, got ${JSON.stringify(v)}`);
  return Number(v);
};

const wrapParse = <T>(fn: (v: string, flag: string) => T, flag: string) => (v: string) => {
  try {
    return fn(v, flag);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
};

/** Builds the command table. Heavy modules load lazily inside each action. */
export function buildProgram(out: CliOutput): Command {
  const program = new Command('orion')
    .description('Orion: a distributed build accelerator for C/C++ (Bazel Remote Execution API v2)')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeOut: out.stdout, writeErr: out.stderr })
    .showHelpAfterError()
    .addHelpText(
      'after',
      '\nexamples:\n  orion head --http-port 8080              # a cluster head with its dashboard\n  orion node --head 10.0.0.1:50050         # on each worker\n  orion build --head 10.0.0.1:50050 -j 32  # in a C/C++ project\n  orion status --head 10.0.0.1:50050 --builds\n\n' +
        'environment: ORION_HEAD, ORION_CACHE_DIR, ORION_JOBS (orion build), ORION_LOG_LEVEL (daemons).\n' +
        'project file: orion.json in the project directory sets head, cacheDir, jobs and makeArgs; flags and environment win.\n' +
        'Each command has --help with its options and examples.',
    );

  program
    .command('head')
    .description(
      'run the cluster head: CAS, action cache, scheduler, node registry\n\n' +
        'example: orion head --port 50050 --data-dir /var/lib/orion\nexample: orion head --host 0.0.0.0 --http-port 8080    # dashboard on http://HOST:8080/, metrics on /metrics',
    )
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0 picks a free one)', wrapParse(parsePort, '--port'), 50050)
    .option('--data-dir <dir>', 'where the CAS and action cache live', path.join(os.homedir(), '.local/share/orion/head'))
    .option('--cas-size <size>', 'disk the CAS may use; past it the blobs used least recently go (default: 50GiB)', wrapParse((v, f) => parseSize(v, f, 1 << 20), '--cas-size'))
    .option('--cas-keep <duration>', 'never remove a blob from the CAS within this long of its last use, whatever its size (default: 1h)', wrapParse(parseDuration, '--cas-keep'))
    .option('--action-cache-size <size>', 'disk the action cache may use (per REAPI instance name); past it the oldest entries not used lately go (default: 512MiB)', wrapParse((v, f) => parseSize(v, f, 16 << 20), '--action-cache-size'))
    .option('--heartbeat-timeout <duration>', 'mark a node inactive after this long without a heartbeat', wrapParse(parseDuration, '--heartbeat-timeout'), 10_000)
    .option('--straggler-min <duration>', 'start a speculative copy of an action that runs 3 times longer than usual only once it has run this long (default: 2s)', wrapParse(parseDuration, '--straggler-min'))
    .option('--http-port <n>', 'serve the web dashboard, the JSON API (/api/nodes, /api/builds, /api/events) and Prometheus /metrics on this port of --host (0 picks a free one; default: off)', wrapParse(parsePort, '--http-port'))
    .option('--log-level <level>', 'trace, debug, info, warn, error (env ORION_LOG_LEVEL)', 'info')
    .action(async (o) => {
      const { runHead } = await import('./commands/head.js');
      const host = String(o.host).includes(':') ? `[${o.host}]` : o.host;
      await runHead({ listen: `${host}:${o.port}`, httpListen: o.httpPort === undefined ? undefined : `${host}:${o.httpPort}`, dataDir: path.resolve(o.dataDir), casMaxBytes: o.casSize, casKeepMs: o.casKeep, actionCacheMaxBytes: o.actionCacheSize, heartbeatTimeoutMs: o.heartbeatTimeout, stragglerMinMs: o.stragglerMin, logLevel: o.logLevel, security: headSecurityFrom(o) });
    });

  program
    .command('node')
    .description(
      'run a worker node that executes actions for a head\n\n' +
        'example: orion node --head 10.0.0.1:50050 --slots 8 --work-dir /var/tmp/orion-node\nexample: orion node --head 10.0.0.1:50050 --listen-host 0.0.0.0 --metrics-port 9100 --health-port 9101',
    )
    .requiredOption('--head <host:port>', 'the head to join', wrapParse(parseHostPort, '--head'))
    .option('--slots <n>', 'actions to run at once', wrapParse(parsePositiveInt, '--slots'), os.availableParallelism())
    .option('--work-dir <dir>', 'node-local CAS and per-action directories', path.join(os.tmpdir(), 'orion-node'))
    .option('--cache-size <size>', 'disk the node-local CAS may use; past it, when no action runs, the blobs used least recently go (default: 20GiB)', wrapParse((v, f) => parseSize(v, f, 1 << 20), '--cache-size'))
    .option('--cache-keep <duration>', 'never remove a blob from the node-local CAS within this long of its last use (default: 1h)', wrapParse(parseDuration, '--cache-keep'))
    .option('--id <id>', 'node id; a node certificate or named node token only admits its own (default: the CN of --tls-cert, else hostname-pid)')
    .addOption(new Option('--require-sandbox', 'refuse to start when bubblewrap cannot sandbox actions'))
    .addOption(new Option('--no-sandbox', 'run actions without bubblewrap'))
    .option('--max-processes <n>', 'most processes one action may have at once, through the pids cgroup (0: no limit)', wrapParseInt0('--max-processes'), 1024)
    .option('--metrics-port <n>', 'serve Prometheus /metrics (and /healthz) over HTTP on this port (0 picks a free one; default: off)', wrapParse(parsePort, '--metrics-port'))
    .option('--health-port <n>', 'serve grpc.health.v1 on this port: SERVING while connected to the head (0 picks a free one; default: off)', wrapParse(parsePort, '--health-port'))
    .option('--listen-host <addr>', 'address --metrics-port, --health-port and --peer-port listen on', '127.0.0.1')
    .option('--peer-port <n>', 'serve this node\'s CAS to other nodes on this port (0 picks a free one), so they fetch its outputs from here rather than from the head', wrapParse(parsePort, '--peer-port'), 0)
    .option('--no-peer', 'no peer endpoint: every input comes from the head')
    .option('--peer-address <host:port>', 'the address other nodes use to reach --peer-port (default: --listen-host and the bound port)', wrapParse(parseHostPort, '--peer-address'))
    .option('--log-level <level>', 'trace, debug, info, warn, error (env ORION_LOG_LEVEL)', 'info')
    // Test only, so not in --help: makes the node misbehave (node/faults.ts).
    .addOption(
      new Option('--fault-inject <fault>', `test only: make this node misbehave on purpose (${NODE_FAULTS.join(', ')})`)
        .argParser((v: string) => {
          if (!isNodeFault(v)) throw new UsageError(`--fault-inject: unknown fault ${JSON.stringify(v)} (known: ${NODE_FAULTS.join(', ')})`);
          return v;
        })
        .hideHelp(),
    )
    .action(async (o) => {
      const { runNode } = await import('./commands/node.js');
      const sandbox = o.requireSandbox ? 'require' : o.sandbox === false ? 'off' : 'auto';
      await runNode({ head: o.head, host: o.listenHost, metricsPort: o.metricsPort, healthPort: o.healthPort, slots: o.slots, workDir: path.resolve(o.workDir), cacheMaxBytes: o.cacheSize, cacheKeepMs: o.cacheKeep, id: o.id, sandbox, maxProcesses: o.maxProcesses, logLevel: o.logLevel, auth: clientAuthFrom(o), faultInject: o.faultInject, peerPort: o.peer === false ? undefined : o.peerPort, peerAddress: o.peerAddress });
    });

  program
    .command('status')
    .description(
      'list the nodes a head knows, or the builds it runs\n\n' +
        'example: orion status --head 127.0.0.1:50050 --status active\nexample: orion status --head 127.0.0.1:50050 --builds',
    )
    .requiredOption('--head <host:port>', 'the head to ask', wrapParse(parseHostPort, '--head'))
    .addOption(new Option('--status <status>', 'only nodes in this state').choices(['active', 'inactive', 'disconnected']))
    .option('--builds', 'list the builds in progress (id, start, queued/running/done/failed actions) instead of the nodes', false)
    .option('--all', 'with --builds: also recently finished builds', false)
    .action(async (o) => {
      const { runStatus } = await import('./commands/status.js');
      out.stdout(await runStatus({ head: o.head, builds: o.builds, all: o.all, status: o.status, auth: clientAuthFrom(o) }));
    });

  program
    .command('build')
    .description(
      'build the project in the current directory (Make, CMake or compile_commands.json), reusing cached results\n\n' +
        'examples:\n  orion build\n  orion build -j 8 -- MALLOC=libc all\n  orion build --head 10.0.0.1:50050 --explain\n  orion build --profile trace.json    # then open trace.json in https://ui.perfetto.dev\n\n' +
        'settings: flags win, then ORION_HEAD, ORION_CACHE_DIR, ORION_JOBS, then orion.json in the project directory:\n' +
        '  {"head": "10.0.0.1:50050", "cacheDir": ".orion-cache", "jobs": 16, "makeArgs": ["MALLOC=libc"]}',
    )
    .argument('[make-args...]', 'targets and VAR=value overrides passed to make (after --)')
    .option('-C, --directory <dir>', 'project directory', '.')
    .option('--head <host:port>', 'build on this cluster (env ORION_HEAD, orion.json "head")', wrapParse(parseHostPort, '--head'))
    .option('--cache-dir <dir>', 'local cache (env ORION_CACHE_DIR, orion.json "cacheDir", default ~/.cache/orion)')
    .option('--cache-size <size>', 'disk the local cache may use; at most once an hour the blobs used least recently go (env ORION_CACHE_SIZE; default 5GiB)', wrapParse((v, f) => parseSize(v, f, 1 << 20), '--cache-size'))
    .option('-j, --jobs <n>', 'actions to run at once (env ORION_JOBS, orion.json "jobs"; default: CPU cores, or 64 with --head)', wrapParse(parsePositiveInt, '--jobs'))
    .option('-k, --keep-going', 'keep building what does not depend on a failed action', false)
    .option('-n, --dry-run', 'show what would run without running it', false)
    .option('--explain', 'for each action that runs, say why it was not a cache hit', false)
    .option('--no-dag', 'with --head: send actions one by one (REAPI Execute) instead of submitting the whole DAG to the head\'s Builds service')
    .option('--local-max <n>', 'with --head: when at most n cache misses wait for the cluster (all else that could run here has), run them here instead (default: CPU cores; 0: always the cluster)', wrapParse(parseNonNegativeInt, '--local-max'))
    .option('--connect-timeout <duration>', 'with --head: how long to wait for the head to answer at the start before failing the build (default: 15s); once it has answered, a head that goes away is waited for (it may be restarting)', wrapParse(parseDuration, '--connect-timeout'))
    .option('--build-dir <dir>', 'CMake build directory (default: build); given, CMakeLists.txt is used even next to a Makefile')
    .option('--profile <file.json>', 'write a timeline of the build (Chrome trace events: one lane per node slot, each action\'s phases) for Perfetto or chrome://tracing')
    .option('-q, --quiet', 'print only errors and the compilers\' output (no progress, no summary unless the build fails)', false)
    .option('-v, --verbose', 'print each command line and each finished action', false)
    .action(async (args: string[], o) => {
      const { runBuildCommand, defaultCacheDir } = await import('./commands/build.js');
      const { loadProjectConfig, resolveBuildSettings } = await import('./project-config.js');
      const settings = resolveBuildSettings({ head: o.head, cacheDir: o.cacheDir, jobs: o.jobs, makeArgs: args }, process.env, (await loadProjectConfig(o.directory)).config);
      const head = settings.head;
      if (o.verbose) out.stderr(`orion: settings: ${Object.entries(settings.sources).map(([k, from]) => `${k}=${JSON.stringify(settings[k as keyof typeof settings.sources])} (${from})`).join(', ') || 'defaults'}\n`);
      const controller = new AbortController();
      // Every action in flight listens to the build's signal (64 at once with a head, one by one).
      setMaxListeners(0, controller.signal);
      const onSignal = () => controller.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        const summary = await runBuildCommand(
          {
            dir: o.directory,
            args: settings.makeArgs,
            head,
            tty: out.tty && !process.env.CI ? out.tty : undefined,
            profile: o.profile ? path.resolve(o.profile) : undefined,
            auth: clientAuthFrom(o),
            cacheDir: path.resolve(settings.cacheDir ?? defaultCacheDir(process.env)),
            jobs: settings.jobs,
            keepGoing: o.keepGoing,
            dryRun: o.dryRun,
            explain: o.explain,
            dag: o.dag,
            localMax: o.localMax,
            connectTimeoutMs: o.connectTimeout,
            cacheMaxBytes: o.cacheSize ?? (process.env.ORION_CACHE_SIZE ? parseSize(process.env.ORION_CACHE_SIZE, 'ORION_CACHE_SIZE', 1 << 20) : undefined),
            quiet: o.quiet,
            verbose: o.verbose,
            buildDir: o.buildDir,
          },
          { stdout: (s) => void out.stdout(String(s)), stderr: (s) => void out.stderr(String(s)) },
          controller.signal,
        );
        if (!summary.ok) throw new BuildFailed();
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });

  program
    .command('graph')
    .description('print the build graph without building (make arguments default to orion.json\'s "makeArgs")\n\nexamples:\n  orion graph --format dot | dot -Tsvg > graph.svg\n  orion graph -C ~/src/redis -- MALLOC=libc')
    .argument('[make-args...]', 'targets and VAR=value overrides passed to make (after --)')
    .option('-C, --directory <dir>', 'project directory', '.')
    .addOption(new Option('--format <format>', 'output format').choices(['json', 'dot']).default('json'))
    .option('--build-dir <dir>', 'CMake build directory (default: build); given, CMakeLists.txt is used even next to a Makefile')
    .action(async (args: string[], o) => {
      const { extractGraph, toJson, toDot } = await import('../dag-extractor/index.js');
      const { loadProjectConfig } = await import('./project-config.js');
      const makeArgs = args.length > 0 ? args : ((await loadProjectConfig(o.directory)).config.makeArgs ?? []);
      const graph = await extractGraph(path.resolve(o.directory), { makeArgs, buildDir: o.buildDir });
      out.stdout(o.format === 'dot' ? toDot(graph) : toJson(graph));
    });

  program
    .command('certs')
    .description('make TLS certificates for a cluster')
    .command('init')
    .description('write a CA plus head, node, client and admin certificates to DIR (uses openssl)\n\nexample: orion certs init ./certs --host head.example.com --host 10.0.0.1 --node build1 --node build2')
    .argument('<dir>', 'where to write the files')
    .option('--host <name>', 'a DNS name or IP the head is reached by (repeatable; localhost and 127.0.0.1 are always included)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--node <id>', 'also write node-ID.crt/.key, a node certificate for node id ID (its CN; repeatable). node.crt is for node id orion-node', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--days <n>', 'validity of the issued certificates', wrapParse(parsePositiveInt, '--days'), 825)
    .option('--force', 'replace existing files', false)
    .action(async (dir: string, o) => {
      const { certsInit, certsUsage } = await import('./commands/certs.js');
      await certsInit({ dir, hosts: o.host, days: o.days, force: o.force, nodes: o.node });
      out.stdout(certsUsage(dir, o.node));
    });

  // Authentication and TLS options, shared by every command that serves or reaches a head.
  for (const c of program.commands) {
    if (c.name() === 'head') addHeadSecurityOptions(c);
    else if (['node', 'status', 'build'].includes(c.name())) addClientAuthOptions(c);
  }
  return program;
}

export interface CliOutput {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** Set when stdout is a terminal: `orion build` then draws a live status line. */
  tty?: { columns: () => number };
}

/** The process's own output; a terminal unless stdout is piped or TERM=dumb. */
export function processOutput(): CliOutput {
  return {
    stdout: (s) => void process.stdout.write(s),
    stderr: (s) => void process.stderr.write(s),
    tty: process.stdout.isTTY && process.env.TERM !== 'dumb' ? { columns: () => process.stdout.columns || 80 } : undefined,
  };
}

/** A build whose actions failed: the reason was already printed. */
export class BuildFailed extends Error {
  constructor() {
    super('build failed');
  }
}

/** Runs the CLI; returns the process exit code. Never calls process.exit. */
export async function runCli(argv: string[], out: CliOutput = processOutput()): Promise<number> {
  const program = buildProgram(out);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof BuildFailed) return 2;
    if (err instanceof UsageError) {
      out.stderr(`orion: ${err.message}\n`);
      return 2;
    }
    if (err instanceof OrionError) {
      out.stderr(`orion: ${err.message}${err.hint ? `\nhint: ${err.hint}` : ''}\n`);
      return 1;
    }
    out.stderr(`orion: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
