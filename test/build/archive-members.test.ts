import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveMembers, archiveStartingPoint } from '../../cli/build/archive-members.js';
import type { BuildAction } from '../../dag-extractor/types.js';

describe('archive members and the archive `ar r` starts from', () => {
  let dir: string;
  const ar = (...args: string[]) => execFileSync('ar', args, { cwd: dir });
  const action = (argv: string[], members: string[], extraInputs: string[] = []): BuildAction => ({
    id: 'x',
    kind: 'archive',
    cwd: dir,
    argv,
    inputs: [...members.map((m) => path.join(dir, m)), ...extraInputs],
    outputs: [path.join(dir, 'lib.a')],
    deps: [],
    cacheable: true,
    label: 'AR lib.a',
  });

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'orion-ar-'));
    for (const name of ['a', 'b', 'a_member_with_a_name_longer_than_sixteen']) {
      writeFileSync(path.join(dir, `${name}.c`), `int ${name}_x;\n`);
      execFileSync('cc', ['-c', `${name}.c`], { cwd: dir });
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lists the members of a GNU archive in order, long names included, without the symbol table', () => {
    ar('rcs', 'lib.a', 'b.o', 'a_member_with_a_name_longer_than_sixteen.o', 'a.o');
    expect(archiveMembers(path.join(dir, 'lib.a'))).toEqual(['b.o', 'a_member_with_a_name_longer_than_sixteen.o', 'a.o']);
    expect(archiveMembers(path.join(dir, 'missing.a'))).toBeUndefined();
    expect(archiveMembers(path.join(dir, 'a.c'))).toBeUndefined();
  });

  it('leaves out an archive holding exactly the members of the command, and keys one holding others', () => {
    rmSync(path.join(dir, 'lib.a'), { force: true });
    const ab = action(['ar', 'rcs', 'lib.a', 'a.o', 'b.o'], ['a.o', 'b.o']);
    expect(archiveStartingPoint(ab), 'no archive yet').toBeUndefined();
    ar('rcs', 'lib.a', 'a.o', 'b.o');
    expect(archiveStartingPoint(ab), 'made by this very command').toBeUndefined();
    // b.c removed from the Makefile: `ar rcs lib.a a.o` keeps b.o in the archive.
    expect(archiveStartingPoint(action(['ar', 'rcs', 'lib.a', 'a.o'], ['a.o']))).toBe(path.join(dir, 'lib.a'));
    // Same members, another order: the update keeps the archive's order.
    expect(archiveStartingPoint(action(['ar', 'rcs', 'lib.a', 'b.o', 'a.o'], ['b.o', 'a.o']))).toBe(path.join(dir, 'lib.a'));
    // `ar q` appends: any existing archive counts.
    expect(archiveStartingPoint(action(['ar', 'qc', 'lib.a', 'a.o', 'b.o'], ['a.o', 'b.o']))).toBe(path.join(dir, 'lib.a'));
    // Made earlier in this build (an input already): nothing to add.
    expect(archiveStartingPoint(action(['ar', 'rcs', 'lib.a', 'a.o'], ['a.o'], [path.join(dir, 'lib.a')]))).toBeUndefined();
  });
});
