import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { OrionError } from '../common/errors.js';
import { UsageError, parseDuration, parseHostPort, parsePort, parsePositiveInt } from './options.js';

const wrapParse = <T>(fn: (v: string, flag: string) => T, flag: string) => (v: string) => {
  try {
    return fn(v, flag);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
};

/** Builds the command table. Heavy modules load lazily inside each action. */
export function buildProgram(out: { stdout: (s: string) => void; stderr: (s: string) => void }): Command {
  const program = new Command('orion')
    .description('Orion: a distributed build accelerator for C/C++ (Bazel Remote Execution API v2)')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeOut: out.stdout, writeErr: out.stderr })
    .showHelpAfterError();

  program
    .command('head')
    .description('run the cluster head: CAS, action cache, scheduler, node registry\n\nexample: orion head --port 50050 --data-dir /var/lib/orion')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0 picks a free one)', wrapParse(parsePort, '--port'), 50050)
    .option('--data-dir <dir>', 'where the CAS and action cache live', path.join(os.homedir(), '.local/share/orion/head'))
    .option('--heartbeat-timeout <duration>', 'mark a node inactive after this long without a heartbeat', wrapParse(parseDuration, '--heartbeat-timeout'), 10_000)
    .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
    .action(async (o) => {
      const { runHead } = await import('./commands/head.js');
      const host = String(o.host).includes(':') ? `[${o.host}]` : o.host;
      await runHead({ listen: `${host}:${o.port}`, dataDir: path.resolve(o.dataDir), heartbeatTimeoutMs: o.heartbeatTimeout, logLevel: o.logLevel });
    });

  program
    .command('node')
    .description('run a worker node that executes actions for a head\n\nexample: orion node --head 10.0.0.1:50050 --slots 8 --work-dir /var/tmp/orion-node')
    .requiredOption('--head <host:port>', 'the head to join', wrapParse(parseHostPort, '--head'))
    .option('--slots <n>', 'actions to run at once', wrapParse(parsePositiveInt, '--slots'), os.availableParallelism())
    .option('--work-dir <dir>', 'node-local CAS and per-action directories', path.join(os.tmpdir(), 'orion-node'))
    .option('--id <id>', 'node id (default: hostname-pid)')
    .addOption(new Option('--require-sandbox', 'refuse to start when bubblewrap cannot sandbox actions'))
    .addOption(new Option('--no-sandbox', 'run actions without bubblewrap'))
    .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
    .action(async (o) => {
      const { runNode } = await import('./commands/node.js');
      const sandbox = o.requireSandbox ? 'require' : o.sandbox === false ? 'off' : 'auto';
      await runNode({ head: o.head, slots: o.slots, workDir: path.resolve(o.workDir), id: o.id, sandbox, logLevel: o.logLevel });
    });

  program
    .command('status')
    .description('list the nodes a head knows\n\nexample: orion status --head 127.0.0.1:50050 --status active')
    .requiredOption('--head <host:port>', 'the head to ask', wrapParse(parseHostPort, '--head'))
    .addOption(new Option('--status <status>', 'only nodes in this state').choices(['active', 'inactive', 'disconnected']))
    .action(async (o) => {
      const { runStatus } = await import('./commands/status.js');
      out.stdout(await runStatus({ head: o.head, status: o.status }));
    });

  program
    .command('build')
    .description(
      'build the project in the current directory (Make, CMake or compile_commands.json), reusing cached results\n\n' +
        'examples:\n  orion build\n  orion build -j 8 -- MALLOC=libc all\n  orion build --head 10.0.0.1:50050 --explain',
    )
    .argument('[make-args...]', 'targets and VAR=value overrides passed to make (after --)')
    .option('-C, --directory <dir>', 'project directory', '.')
    .option('--head <host:port>', 'build on this cluster (env ORION_HEAD)', wrapParse(parseHostPort, '--head'))
    .option('--cache-dir <dir>', 'local cache (env ORION_CACHE_DIR, default ~/.cache/orion)')
    .option('-j, --jobs <n>', 'actions to run at once (default: CPU cores, or 64 with --head)', wrapParse(parsePositiveInt, '--jobs'))
    .option('-k, --keep-going', 'keep building what does not depend on a failed action', false)
    .option('-n, --dry-run', 'show what would run without running it', false)
    .option('--explain', 'for each action that runs, say why it was not a cache hit', false)
    .option('--build-dir <dir>', 'CMake build directory (default: build)')
    .option('-q, --quiet', 'print only errors and the compilers\' output', false)
    .option('-v, --verbose', 'print each command line', false)
    .action(async (args: string[], o) => {
      const { runBuildCommand, defaultCacheDir } = await import('./commands/build.js');
      const head = o.head ?? (process.env.ORION_HEAD ? parseHostPort(process.env.ORION_HEAD, 'ORION_HEAD') : undefined);
      const controller = new AbortController();
      const onSignal = () => controller.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        const summary = await runBuildCommand(
          {
            dir: o.directory,
            args,
            head,
            cacheDir: path.resolve(o.cacheDir ?? defaultCacheDir(process.env)),
            jobs: o.jobs,
            keepGoing: o.keepGoing,
            dryRun: o.dryRun,
            explain: o.explain,
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
    .description('print the build graph without building\n\nexample: orion graph --format dot | dot -Tsvg > graph.svg')
    .argument('[make-args...]', 'targets and VAR=value overrides passed to make (after --)')
    .option('-C, --directory <dir>', 'project directory', '.')
    .addOption(new Option('--format <format>', 'output format').choices(['json', 'dot']).default('json'))
    .option('--build-dir <dir>', 'CMake build directory (default: build)')
    .action(async (args: string[], o) => {
      const { extractGraph, toJson, toDot } = await import('../dag-extractor/index.js');
      const graph = await extractGraph(path.resolve(o.directory), { makeArgs: args, buildDir: o.buildDir });
      out.stdout(o.format === 'dot' ? toDot(graph) : toJson(graph));
    });

  return program;
}

/** A build whose actions failed: the reason was already printed. */
export class BuildFailed extends Error {
  constructor() {
    super('build failed');
  }
}

/** Runs the CLI; returns the process exit code. Never calls process.exit. */
export async function runCli(argv: string[], out = { stdout: (s: string) => void process.stdout.write(s), stderr: (s: string) => void process.stderr.write(s) }): Promise<number> {
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
