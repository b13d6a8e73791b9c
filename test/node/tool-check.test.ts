import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createStatCache } from '../../cas/stat-cache.js';
import { digestOf } from '../../cas/digest.js';
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
