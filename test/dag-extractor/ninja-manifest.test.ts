import { describe, expect, it } from 'vitest';
import { Code } from '../../common/errors.js';
import { parseNinjaManifest } from '../../dag-extractor/ninja-manifest.js';

function reader(files: Record<string, string>) {
  return async (file: string) => {
    const text = files[file];
    if (text === undefined) throw new Error(`no such file ${file}`);
    return text;
  };
}

describe('parseNinjaManifest', () => {
  it('expands commands with $in/$out quoting, edge variables over rule variables, and escapes', async () => {
    const files = {
      '/b/build.ninja': [
        'cflags = -O2',
        'rule cc',
        '  command = gcc $cflags $extra -c $in -o $out',
        '  depfile = $out.d',
        'build obj/a$ b.o: cc src/a$ b.c | gen.h || order',
        '  cflags = -O0 $$HOME',
        '  extra = -DX=1',
        'build obj/c.o: cc src/c.c',
        '',
      ].join('\n'),
    };
    const { edges } = await parseNinjaManifest('build.ninja', '/b', reader(files));
    expect(edges[0]).toMatchObject({
      rule: 'cc',
      outputs: ['obj/a b.o'],
      explicitInputs: ['src/a b.c'],
      implicitInputs: ['gen.h'],
      orderOnlyInputs: ['order'],
      command: "gcc -O0 $HOME -DX=1 -c 'src/a b.c' -o 'obj/a b.o'",
    });
    expect(edges[1].command).toBe('gcc -O2  -c src/c.c -o obj/c.o');
  });

  it('reads included files in the same scope and subninja files in a child scope', async () => {
    const files = {
      '/b/build.ninja': 'v = top\ninclude rules.ninja\nsubninja sub/build.ninja\nbuild out1: r in1\ndefault out1\n',
      '/b/rules.ninja': 'rule r\n  command = run $v $in $out\n',
      '/b/sub/build.ninja': 'v = sub\nbuild out2: r in2\n',
    };
    const manifest = await parseNinjaManifest('build.ninja', '/b', reader(files));
    expect(manifest.edges.map((e) => e.command)).toEqual(['run sub in2 out2', 'run top in1 out1']);
    expect(manifest.defaults).toEqual(['out1']);
  });

  it('joins $-continued lines, skips comments and marks generator rules', async () => {
    const files = {
      '/b/build.ninja': [
        '# a comment',
        'rule regen',
        '  command = cmake $',
        '      -S src',
        '  generator = 1',
        'build build.ninja: regen CMakeLists.txt',
        'build all: phony build.ninja',
      ].join('\n'),
    };
    const { edges } = await parseNinjaManifest('build.ninja', '/b', reader(files));
    expect(edges[0]).toMatchObject({ command: 'cmake -S src', generator: true });
    expect(edges[1]).toMatchObject({ rule: 'phony', command: '', generator: false });
  });

  it('replaces @rspfile in the command with the response file content, as ninja -t compdb -x does', async () => {
    const files = {
      '/b/build.ninja': 'rule link\n  command = cc @$out.rsp -o $out\n  rspfile = $out.rsp\n  rspfile_content = $in\nbuild app: link a.o b.o\n',
    };
    const { edges } = await parseNinjaManifest('build.ninja', '/b', reader(files));
    expect(edges[0].command).toBe('cc a.o b.o -o app');
  });

  it('reports an unknown rule with the file and line as FAILED_PRECONDITION', async () => {
    const files = { '/b/build.ninja': 'build x: nosuchrule y\n' };
    await expect(parseNinjaManifest('build.ninja', '/b', reader(files))).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
      message: "build.ninja:1: unknown build rule 'nosuchrule'",
    });
  });
});
