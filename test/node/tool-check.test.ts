import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createStatCache } from '../../cas/stat-cache.js';
import { digestOf, digestOfFile } from '../../cas/digest.js';
import { Code, OrionError } from '../../common/errors.js';
import { createToolResolver } from '../../common/tool-resolver.js';
import { createToolCheck } from '../../node/tool-check.js';
import { errorFromStatus, statusToPb } from '../../proto/convert.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

function tool(file: string, text: string) {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  chmodSync(file, 0o755);
  return digestOf(Buffer.from(text)).hash;
}

describe('tool check (a node runs only the compiler the key names)', () => {
  it('passes the same binary found elsewhere on the PATH, refuses another one or none, naming both, and skips project tools and tools the client lacked', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-tool-check-'));
    dirs.push(dir);
    const clientHash = tool(path.join(dir, 'client/bin/cc'), '#!/bin/sh\necho 12\n');
    tool(path.join(dir, 'same/cc'), '#!/bin/sh\necho 12\n');
    const otherHash = tool(path.join(dir, 'other/cc'), '#!/bin/sh\necho 13\n');
    const check = createToolCheck(createToolResolver(createStatCache(path.join(dir, 'digests.json'))), 'n1');
    const spec = { expected: `/usr/bin/cc@${clientHash}`, argv0: 'cc', cwd: '/p', mountPath: '/p' };
    await expect(check.verify({ ...spec, pathEnv: `${dir}/empty:${dir}/same` })).resolves.toEqual({});
    const err = await check.verify({ ...spec, pathEnv: `${dir}/other:${dir}/same` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.FAILED_PRECONDITION);
    expect((err as OrionError).toolchain).toBe('/usr/bin/cc');
    expect((err as OrionError).message).toBe(`node n1 runs cc as ${dir}/other/cc (sha256 ${otherHash.slice(0, 12)}), not the client's /usr/bin/cc (sha256 ${clientHash.slice(0, 12)}): another compiler would be cached under the client's key`);
    // The client's own path holds the same binary while this PATH finds another (a masquerade
    // directory, say): the action's PATH gets that directory first.
    tool(path.join(dir, 'wrap/cc'), '#!/bin/sh\necho 12\n');
    await expect(check.verify({ ...spec, expected: `${dir}/wrap/cc@${clientHash}`, pathEnv: `${dir}/other` })).resolves.toEqual({ pathFirst: `${dir}/wrap` });
    const none = (await check.verify({ ...spec, pathEnv: `${dir}/empty` }).catch((e: unknown) => e)) as OrionError;
    expect(none.toolchain).toBe('/usr/bin/cc');
    expect(none.message).toMatch(/^node n1 has no cc on the action's PATH/);
    // A tool in the project is one of the action's inputs; a tool the client did not find is not compared.
    await expect(check.verify({ expected: `/p/tools/gen@${clientHash}`, argv0: './tools/gen', cwd: '/p', pathEnv: `${dir}/empty`, mountPath: '/p' })).resolves.toEqual({});
    await expect(check.verify({ ...spec, expected: 'cc@missing', pathEnv: `${dir}/empty` })).resolves.toEqual({});
  });

  it('finds a command as the shell would (past absent ones, files that are not executable, PATH entries that are not directories; through symlinks), and reads an unchanged binary only once', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-tool-check-'));
    dirs.push(dir);
    const real = path.join(dir, 'real/gen-tool-2');
    const hash = tool(real, '#!/bin/sh\necho 2\n');
    mkdirSync(path.join(dir, 'plain'));
    writeFileSync(path.join(dir, 'plain/gen-tool'), '#!/bin/sh\necho other\n', { mode: 0o644 });
    writeFileSync(path.join(dir, 'a-file'), '');
    mkdirSync(path.join(dir, 'links'));
    symlinkSync('../real/gen-tool-2', path.join(dir, 'links/gen-tool'));
    let hashed = 0;
    // An hour later: the binary is out of the stat cache's racy window, as an installed one is.
    const later = { now: () => Date.now() + 3_600_000, setTimeout: () => ({ cancel() {} }) };
    const cache = createStatCache(path.join(dir, 'digests.json'), { hashFile: (f) => (hashed++, digestOfFile(f)), clock: later });
    const tools = createToolResolver(cache, { remember: false });
    const pathEnv = `${dir}/absent:${dir}/a-file:${dir}/plain:${dir}/links`;
    const want = { path: `${dir}/links/gen-tool`, digest: { hash, sizeBytes: 17 }, identity: hash };
    expect(await tools.resolve('gen-tool', '/p', pathEnv)).toEqual(want);
    expect(await tools.resolve('gen-tool', '/p', pathEnv)).toEqual(want);
    expect(hashed).toBe(1);
    expect(await tools.resolve('gen-tool', '/p', `${dir}/absent:${dir}/plain`)).toBeUndefined();
    expect(await tools.resolve('./links/gen-tool', dir, '')).toEqual({ ...want, path: `${dir}/links/gen-tool` });
  });

  it('sees a compiler upgraded under a running node (a daemon does not remember its answers)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-tool-check-'));
    dirs.push(dir);
    const before = tool(path.join(dir, 'bin/cc'), '#!/bin/sh\necho 12\n');
    const check = createToolCheck(createToolResolver(createStatCache(path.join(dir, 'digests.json')), { remember: false }), 'n1');
    const spec = { argv0: 'cc', cwd: '/p', mountPath: '/p', pathEnv: `${dir}/bin` };
    await expect(check.verify({ ...spec, expected: `/usr/bin/cc@${before}` })).resolves.toEqual({});
    // The package manager replaces the binary (a new file renamed over the old one).
    const after = tool(path.join(dir, 'bin/cc.new'), '#!/bin/sh\necho 13\n');
    renameSync(path.join(dir, 'bin/cc.new'), path.join(dir, 'bin/cc'));
    const err = (await check.verify({ ...spec, expected: `/usr/bin/cc@${before}` }).catch((e: unknown) => e)) as OrionError;
    expect(err.toolchain).toBe('/usr/bin/cc');
    await expect(check.verify({ ...spec, expected: `/usr/bin/cc@${after}` })).resolves.toEqual({});
  });

  it('carries the refusal from node to head in the status (a PreconditionFailure violation), so the head can try another node', () => {
    const back = errorFromStatus(statusToPb(Code.FAILED_PRECONDITION, 'node n1 runs cc as ...', undefined, '/usr/bin/cc'), 'node n1');
    expect(back?.toolchain).toBe('/usr/bin/cc');
    expect(back?.code).toBe(Code.FAILED_PRECONDITION);
    expect(errorFromStatus(statusToPb(Code.FAILED_PRECONDITION, 'missing', [{ hash: 'a'.repeat(64), sizeBytes: 1 }]), 'x')?.toolchain).toBeUndefined();
  });
});

describe('toolchain identity (a compiler driver and the programs it runs)', () => {
  /** A compiled fake gcc: answers -print-prog-name like gcc, its cc1 by path (beside its bin/), other programs by name. */
  const FAKE_GCC = `#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc < 2 || strncmp(argv[1], "-print-prog-name=", 17) != 0) return 1;
  const char *prog = argv[1] + 17;
  if (strcmp(prog, "cc1") != 0) { puts(prog); return 0; }
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0) return 1;
  exe[n] = 0;
  printf("%s/libexec/cc1\\n", dirname(dirname(exe)));
  return 0;
}
`;
  let compiled: string | undefined;
  let compiledIn: string | undefined;
  afterAll(async () => {
    if (compiledIn) await rm(compiledIn, { recursive: true, force: true });
  });
  async function fakeGcc(): Promise<string> {
    if (compiled) return compiled;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-fake-gcc-'));
    compiledIn = dir;
    writeFileSync(path.join(dir, 'gcc.c'), FAKE_GCC);
    await execa('cc', ['-O1', '-o', path.join(dir, 'gcc'), path.join(dir, 'gcc.c')]);
    return (compiled = path.join(dir, 'gcc'));
  }
  /** dir/bin/gcc (the fake), dir/libexec/cc1, dir/bin/as. */
  async function fakeToolchain(dir: string, cc1Text: string) {
    mkdirSync(path.join(dir, 'bin'), { recursive: true });
    copyFileSync(await fakeGcc(), path.join(dir, 'bin/gcc'));
    tool(path.join(dir, 'libexec/cc1'), cc1Text);
    tool(path.join(dir, 'bin/as'), '#!/bin/sh\necho as\n');
    return digestOf(readFileSync(path.join(dir, 'bin/gcc'))).hash;
  }

  it("names a driver by its digest and its cc1's and as's: a cc1 changed behind the same driver is another toolchain, refused by a node", async () => {
    const client = await mkdtemp(path.join(os.tmpdir(), 'orion-toolchain-'));
    const node = await mkdtemp(path.join(os.tmpdir(), 'orion-toolchain-'));
    dirs.push(client, node);
    const driverHash = await fakeToolchain(client, 'cc1 version 1');
    const resolver = createToolResolver(createStatCache(path.join(client, 'digests.json')), { remember: false });
    const before = (await resolver.resolve('gcc', '/p', `${client}/bin`))!;
    expect(before.digest.hash).toBe(driverHash);
    expect(before.identity).toMatch(/^[0-9a-f]{64}$/);
    expect(before.identity).not.toBe(driverHash);
    tool(path.join(client, 'libexec/cc1.new'), 'cc1 version 2');
    renameSync(path.join(client, 'libexec/cc1.new'), path.join(client, 'libexec/cc1'));
    const after = (await resolver.resolve('gcc', '/p', `${client}/bin`))!;
    expect(after.digest.hash).toBe(driverHash);
    expect(after.identity).not.toBe(before.identity);
    // So is another assembler on the PATH.
    tool(path.join(client, 'bin/as.new'), '#!/bin/sh\necho as 2\n');
    renameSync(path.join(client, 'bin/as.new'), path.join(client, 'bin/as'));
    expect((await resolver.resolve('gcc', '/p', `${client}/bin`))!.identity).not.toBe(after.identity);

    // A node with the same driver and the old cc1 refuses the new toolchain's action, saying why.
    await fakeToolchain(node, 'cc1 version 1');
    const check = createToolCheck(createToolResolver(createStatCache(path.join(node, 'digests.json')), { remember: false }), 'n1');
    await expect(check.verify({ expected: `/usr/bin/gcc@${before.identity}`, argv0: 'gcc', cwd: '/p', mountPath: '/p', pathEnv: `${node}/bin` })).resolves.toEqual({});
    const err = (await check.verify({ expected: `/usr/bin/gcc@${after.identity}`, argv0: 'gcc', cwd: '/p', mountPath: '/p', pathEnv: `${node}/bin` }).catch((e: unknown) => e)) as OrionError;
    expect(err).toBeInstanceOf(OrionError);
    expect(err.toolchain).toBe('/usr/bin/gcc');
    expect(err.message).toContain(`(sha256 ${driverHash.slice(0, 12)}, with its cc1, as and ld: ${before.identity.slice(0, 12)})`);
  });

  it('warms a driver ahead of its first resolve: each binary hashed and each program asked once, and no answer kept from before the tool changed', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-toolchain-'));
    dirs.push(dir);
    await fakeToolchain(dir, 'cc1');
    const hashed: string[] = [];
    const asked: string[] = [];
    // An hour later: the binaries are out of the stat cache's racy window, as installed ones are.
    const later = { now: () => Date.now() + 3_600_000, setTimeout: () => ({ cancel() {} }) };
    const cache = createStatCache(path.join(dir, 'digests.json'), { hashFile: (f) => (hashed.push(path.basename(f)), digestOfFile(f)), clock: later });
    const resolver = createToolResolver(cache, { printProgName: async (_driver, prog) => (asked.push(prog), prog === 'cc1' ? `${dir}/libexec/cc1` : prog) });
    resolver.warm!('gcc', '/p', `${dir}/bin`);
    resolver.warm!('gcc', '/p', `${dir}/bin`);
    // Resolved while the warm-up is under way: it waits for it instead of hashing the binaries again.
    const got = (await resolver.resolve('gcc', '/p', `${dir}/bin`))!;
    expect(hashed.sort()).toEqual(['as', 'cc1', 'gcc']);
    expect(asked.sort()).toEqual(['as', 'cc1', 'cc1plus', 'collect2', 'ld']);
    const plain = createToolResolver(createStatCache(path.join(dir, 'other.json')), { printProgName: async (_driver, prog) => (prog === 'cc1' ? `${dir}/libexec/cc1` : prog) });
    expect((await plain.resolve('gcc', '/p', `${dir}/bin`))!.identity).toBe(got.identity);
    // A tool warmed before the build made it is found once it exists (the warm-up's miss is not kept).
    const tools = createToolResolver(createStatCache(path.join(dir, 'digests2.json')));
    tools.warm!('gen-tool', '/p', `${dir}/made`);
    await new Promise((r) => setTimeout(r, 50));
    const made = tool(path.join(dir, 'made/gen-tool'), '#!/bin/sh\necho made\n');
    expect((await tools.resolve('gen-tool', '/p', `${dir}/made`))?.identity).toBe(made);
  });

  it('asks each driver once, keeping its answers in a file for the next build, and never runs a script named like a driver', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-toolchain-'));
    dirs.push(dir);
    await fakeToolchain(dir, 'cc1');
    const file = path.join(dir, 'toolchains.json');
    const asked: string[] = [];
    const real = createToolResolver(createStatCache(path.join(dir, 'digests.json')), { companionsFile: file });
    const counting = createToolResolver(createStatCache(path.join(dir, 'digests.json')), {
      companionsFile: path.join(dir, 'other.json'),
      printProgName: async (driver, prog) => (asked.push(prog), prog === 'cc1' ? `${dir}/libexec/cc1` : prog),
    });
    const first = (await real.resolve('gcc', '/p', `${dir}/bin`))!;
    expect((await counting.resolve('gcc', '/p', `${dir}/bin`))!.identity).toBe(first.identity);
    expect(asked.sort()).toEqual(['as', 'cc1', 'cc1plus', 'collect2', 'ld']);
    // The next build reads the answers instead of running the driver.
    const never = async (): Promise<string> => {
      throw new Error('ran the driver again');
    };
    const next = createToolResolver(createStatCache(path.join(dir, 'digests.json')), { companionsFile: file, printProgName: never });
    expect((await next.resolve('gcc', '/p', `${dir}/bin`))!.identity).toBe(first.identity);
    // A wrapper script called slow-cc: named by its own digest, never run with -print-prog-name.
    const marker = path.join(dir, 'ran');
    const wrapper = tool(path.join(dir, 'bin/slow-cc'), `#!/bin/sh\ntouch ${marker}\necho /bin/true\n`);
    const plain = createToolResolver(createStatCache(path.join(dir, 'digests.json')));
    expect((await plain.resolve('slow-cc', '/p', `${dir}/bin`))!.identity).toBe(wrapper);
    expect(existsSync(marker)).toBe(false);
  });
});
