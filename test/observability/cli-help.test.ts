import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram, runCli } from '../../cli/cli.js';

async function help(argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runCli([...argv, '--help'], { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { code, stdout, stderr };
}

/** Every runnable command, as its argv path ("certs init"). */
function leafCommands(c: Command, prefix: string[] = []): string[][] {
  return c.commands.flatMap((sub) => (sub.commands.length > 0 ? leafCommands(sub, [...prefix, sub.name()]) : [[...prefix, sub.name()]]));
}

const program = buildProgram({ stdout: () => undefined, stderr: () => undefined });
const commands = leafCommands(program);

describe('orion --help documents every option with an example', () => {
  it('covers the commands users run', () => {
    expect(commands.map((c) => c.join(' '))).toEqual(expect.arrayContaining(['head', 'node', 'status', 'build', 'graph']));
  });

  it.each(commands.map((c) => [c.join(' '), c] as const))('`orion %s --help` lists each option with a description, and an example', async (_name, argv) => {
    const r = await help([...argv]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    let cmd: Command = program;
    for (const n of argv) cmd = cmd.commands.find((c) => c.name() === n)!;
    // Hidden options (test-only ones such as `node --fault-inject`) are left out of --help on purpose.
    for (const o of cmd.options.filter((x) => !x.hidden)) {
      expect(o.description.length, `${o.flags} has no description`).toBeGreaterThan(10);
      expect(r.stdout).toContain(o.flags);
    }
    expect(r.stdout).toMatch(/examples?:\n?\s+orion /);
  });

  it('`orion --help` names the environment variables and orion.json, with examples', async () => {
    const r = await help([]);
    expect(r.code).toBe(0);
    for (const s of ['ORION_HEAD', 'ORION_CACHE_DIR', 'ORION_JOBS', 'ORION_LOG_LEVEL', 'orion.json', 'examples:', 'orion head --http-port 8080']) expect(r.stdout).toContain(s);
  });

  it('documents the observability options', async () => {
    expect((await help(['head'])).stdout).toContain('--http-port <n>');
    const node = (await help(['node'])).stdout;
    for (const o of ['--metrics-port <n>', '--health-port <n>', '--listen-host <addr>']) expect(node).toContain(o);
    expect((await help(['status'])).stdout).toContain('--builds');
    const build = (await help(['build'])).stdout;
    for (const o of ['--profile <file.json>', '-q, --quiet', '-v, --verbose', 'ORION_JOBS', 'orion.json']) expect(build).toContain(o);
  });
});
