import { describe, expect, it } from 'vitest';
import { classifyCommandLine, type ClassifyOptions } from '../../dag-extractor/command-line-classifier.js';

const ROOT = '/proj';
const make: ClassifyOptions = { root: ROOT, makeNames: new Set(['make', 'gmake']), mode: 'split' };
const ninja: ClassifyOptions = { root: ROOT, makeNames: new Set(), mode: 'single' };

function classify(line: string, cwd = ROOT, options = make) {
  return classifyCommandLine(line, cwd, options);
}

describe('classifyCommandLine', () => {
  it('reads a libtool compile as a compile of the compiler at its end, writing the .lo and both objects, the libtool script an input; other libtool modes stay steps', () => {
    const d = classify('/bin/bash ../libtool --tag=CC --mode=compile gcc -DX -I.. -g -MT a.lo -MD -MP -MF .deps/a.Tpo -c -o a.lo a.c', '/proj/src').drafts;
    expect(d).toHaveLength(1);
    expect(d[0]).toMatchObject({
      kind: 'compile',
      cacheable: true,
      argv: ['/bin/bash', '../libtool', '--tag=CC', '--mode=compile', 'gcc', '-DX', '-I..', '-g', '-MT', 'a.lo', '-MD', '-MP', '-MF', '.deps/a.Tpo', '-c', '-o', 'a.lo', 'a.c'],
      inputs: ['/proj/src/a.c', '/proj/libtool'],
      outputs: ['/proj/src/a.lo', '/proj/src/.libs/a.o', '/proj/src/a.o', '/proj/src/.deps/a.Tpo'],
    });
    expect(classify('libtool --mode compile --silent cc -c -o b.lo b.c').drafts[0]).toMatchObject({ kind: 'compile', outputs: ['/proj/b.lo', '/proj/.libs/b.o', '/proj/b.o'] });
    expect(classify('/bin/bash ./libtool --tag=CC --mode=link gcc -o libx.la a.lo -rpath /usr/lib').drafts[0]).toMatchObject({ kind: 'other', cacheable: false });
    // Not an object libtool knows how to name: left to run as a step.
    expect(classify('/bin/bash ./libtool --mode=compile gcc -c -o a.o a.c').drafts[0]).toMatchObject({ kind: 'other' });
  });

  it("runs steps with make's shell and flags, keeps compiles as tools, and leaves a line bash reads otherwise to bash whole", () => {
    const bash: ClassifyOptions = { ...make, shell: ['/bin/bash', '-eu', '-o', 'pipefail', '-c'] };
    expect(classify('echo hi > out.txt', ROOT, bash).drafts[0]).toMatchObject({ kind: 'other', argv: ['/bin/bash', '-eu', '-o', 'pipefail', '-c', 'echo hi > out.txt'] });
    expect(classify('cc -c a.c -o a.o', ROOT, bash).drafts[0]).toMatchObject({ kind: 'compile', argv: ['cc', '-c', 'a.c', '-o', 'a.o'] });
    for (const line of ['cc -c {a,b}.c', '[[ -f x ]] && cc -c a.c -o a.o', "cc -DX=$'a' -c a.c -o a.o", 'diff <(cat a) b > d', 'cc -c a{1..3}.c']) {
      expect(classify(line, ROOT, bash).drafts, line).toEqual([expect.objectContaining({ kind: 'other', argv: ['/bin/bash', '-eu', '-o', 'pipefail', '-c', line] })]);
    }
    // Under /bin/sh the same line is POSIX: braces are literal, and the compile stays a tool.
    expect(classify('cc -c a.c -o a.o', ROOT).drafts[0]!.argv).toEqual(['cc', '-c', 'a.c', '-o', 'a.o']);
  });

  it("classifies a Redis-style `printf ... 1>&2; cc -c` line as a compile of the cc command alone", () => {
    const { drafts } = classify("printf '    %b %b\\n' CC adlist.o 1>&2;cc -std=c11 -O2 -c adlist.c -o adlist.o", '/proj/src');
    expect(drafts).toHaveLength(1);
    expect(drafts[0]).toMatchObject({
      kind: 'compile',
      verb: 'CC',
      cwd: '/proj/src',
      argv: ['cc', '-std=c11', '-O2', '-c', 'adlist.c', '-o', 'adlist.o'],
      inputs: ['/proj/src/adlist.c'],
      outputs: ['/proj/src/adlist.o'],
      cacheable: true,
    });
  });

  it('keeps quoted defines exactly as the shell passes them', () => {
    const [draft] = classify('gcc-12 -DVERSION="\\"1.0\\"" -c v.c').drafts;
    expect(draft.kind).toBe('compile');
    expect(draft.argv).toEqual(['gcc-12', '-DVERSION="1.0"', '-c', 'v.c']);
    expect(draft.outputs).toEqual(['/proj/v.o']);
  });

  it('adds the dependency file of -MMD, -MD -MF and -Wp,-MD to the outputs', () => {
    expect(classify('cc -MMD -MP -c src/a.c -o obj/a.o').drafts[0].outputs).toEqual(['/proj/obj/a.o', '/proj/obj/a.d']);
    expect(classify('cc -MD -MF deps/a.dep -c a.c').drafts[0].outputs).toEqual(['/proj/a.o', '/proj/deps/a.dep']);
    expect(classify('cc -Wp,-MD,.a.o.d -c a.c -o a.o').drafts[0].outputs).toEqual(['/proj/a.o', '/proj/.a.o.d']);
    expect(classify('cc -MD -c x.c -o x.c.o').drafts[0].outputs).toEqual(['/proj/x.c.o', '/proj/x.c.d']);
  });

  it('recognises compilers by any path, version suffix, cross prefix or ccache launcher', () => {
    for (const compiler of ['/usr/bin/clang++', 'x86_64-linux-gnu-gcc-12', 'clang-17', 'c++']) {
      expect(classify(`${compiler} -c a.cpp`).drafts[0].kind).toBe('compile');
    }
    const [viaCcache] = classify('ccache gcc -c a.c -o a.o').drafts;
    expect(viaCcache.kind).toBe('compile');
    expect(viaCcache.argv).toEqual(['gcc', '-c', 'a.c', '-o', 'a.o']);
  });

  it('labels C++ and assembler compiles by the source language', () => {
    expect(classify('c++ -c app/main.cpp -o main.o').drafts[0].verb).toBe('CXX');
    expect(classify('cc -c start.S -o start.o').drafts[0].verb).toBe('AS');
    expect(classify('cc -x c++ -c weird.inc -o weird.o').drafts[0].verb).toBe('CXX');
  });

  it('classifies ar as an archive of its members and ranlib as an in-place update', () => {
    const [ar] = classify('ar rcs libfoo.a a.o b.o', '/proj/lib').drafts;
    expect(ar).toMatchObject({ kind: 'archive', verb: 'AR', inputs: ['/proj/lib/a.o', '/proj/lib/b.o'], outputs: ['/proj/lib/libfoo.a'] });
    const [ranlib] = classify('ranlib libfoo.a', '/proj/lib').drafts;
    expect(ranlib).toMatchObject({ kind: 'archive', verb: 'RANLIB', inputs: ['/proj/lib/libfoo.a'], outputs: ['/proj/lib/libfoo.a'] });
  });

  it('classifies a driver with -o and no -c as a link reading the project objects and archives on the line', () => {
    const [link] = classify('cc -O2 -o app main.o lib/libfoo.a /usr/lib/x86_64-linux-gnu/libm.a -Llib -lbar -lm').drafts;
    expect(link).toMatchObject({ kind: 'link', verb: 'LD', outputs: ['/proj/app'], inputs: ['/proj/main.o', '/proj/lib/libfoo.a'] });
    expect(link.optionalInputs).toEqual(['/proj/lib/libbar.so', '/proj/lib/libbar.a', '/proj/lib/libm.so', '/proj/lib/libm.a']);
  });

  it('classifies a plain install or cp of one file to a file path as a cacheable copy', () => {
    const [install] = classify('install redis-server redis-sentinel', '/proj/src').drafts;
    expect(install).toMatchObject({ kind: 'copy', verb: 'INSTALL', cacheable: true, argv: ['install', 'redis-server', 'redis-sentinel'], inputs: ['/proj/src/redis-server'], outputs: ['/proj/src/redis-sentinel'] });
    for (const line of ['install -c -m 755 app bin/app', 'install -m0644 a.h include/a.h', 'install --mode=0755 app bin/app', 'cp -f app bin/app', 'cp app bin/app']) {
      expect(classify(line).drafts[0], line).toMatchObject({ kind: 'copy', cacheable: true });
    }
    // A restored output is 0755 or 0644, and anything beyond one file copied to a path stays a step.
    for (const line of [
      'install -m 0600 app bin/app',
      'install -s app bin/app',
      'install -d bin',
      'install app bin/',
      'cp -p app bin/app',
      'cp -r dir other',
      'cp a b dir',
      'cp app app',
      'cp app /usr/local/bin/app',
      'cp ../outside.h inside.h',
    ]) {
      expect(classify(line).drafts[0], line).toMatchObject({ kind: 'other', cacheable: false });
    }
  });

  it('does not treat preprocessing, assembly output or syntax checks as compiles', () => {
    for (const line of ['cc -E a.c -o a.i', 'cc -S a.c -o a.s', 'cc -fsyntax-only -c a.c', 'cc -MM a.c']) {
      expect(classify(line).drafts[0].kind).toBe('other');
    }
  });

  it('makes anything else a non-cacheable shell step with the outputs it visibly writes', () => {
    const [gen] = classify('sh scripts/gen.sh VERSION > gen/version.h', '/proj').drafts;
    expect(gen).toMatchObject({
      kind: 'other',
      verb: 'GEN',
      argv: ['/bin/sh', '-c', 'sh scripts/gen.sh VERSION > gen/version.h'],
      outputs: ['/proj/gen/version.h'],
      cacheable: false,
    });
    expect(classify('cp -r build/tool.h include/tool.h').drafts[0]).toMatchObject({ kind: 'other', outputs: ['/proj/include/tool.h'] });
    expect(classify('bison -o parser.c parser.y').drafts[0].outputs).toEqual(['/proj/parser.c']);
    expect(classify('mkdir -p gen').drafts[0]).toMatchObject({ verb: 'SH', outputs: [] });
  });

  it('follows cd segments: a tool after `cd dir &&` runs in dir', () => {
    const [draft] = classify('cd lib && cc -c a.c', '/proj').drafts;
    expect(draft).toMatchObject({ kind: 'compile', cwd: '/proj/lib', inputs: ['/proj/lib/a.c'], outputs: ['/proj/lib/a.o'] });
  });

  it('resolves the outputs of a whole-line shell step against the directory of each segment', () => {
    const [draft] = classify('cd gen && ./mkhdr > out.h', '/proj').drafts;
    expect(draft).toMatchObject({ kind: 'other', cwd: '/proj', outputs: ['/proj/gen/out.h'] });
  });

  it('splits a line of several tool commands into one action each in make mode', () => {
    const { drafts } = classify('cc -c a.c && cc -c b.c; ar rcs l.a a.o b.o');
    expect(drafts.map((d) => d.kind)).toEqual(['compile', 'compile', 'archive']);
  });

  it("keeps CMake's rm + ar + ranlib archive line as one cacheable archive action", () => {
    const line = ': && /usr/bin/cmake -E rm -f libx.a && /usr/bin/ar qc libx.a  a.o b.o && /usr/bin/ranlib libx.a && :';
    const { drafts } = classify(line, '/proj/build', ninja);
    expect(drafts).toHaveLength(1);
    expect(drafts[0]).toMatchObject({
      kind: 'archive',
      verb: 'AR',
      cwd: '/proj/build',
      argv: ['/bin/sh', '-c', line],
      inputs: ['/proj/build/a.o', '/proj/build/b.o'],
      optionalInputs: [],
      outputs: ['/proj/build/libx.a'],
      cacheable: true,
    });
  });

  it('drops recursive make invocations and reports the line as recursive', () => {
    expect(classify('make -C lib')).toEqual({ recursive: true, drafts: [] });
    expect(classify('cd tools && make')).toEqual({ recursive: true, drafts: [] });
    expect(classify('/usr/bin/gmake -C sub all')).toEqual({ recursive: true, drafts: [] });
    expect(classify('for d in a b; do make -C $d all; done')).toEqual({ recursive: true, drafts: [] });
  });

  it('keeps the other commands of a recursive make line, without the make invocation', () => {
    const { recursive, drafts } = classify('make -C lib && touch dist/stamp');
    expect(recursive).toBe(true);
    expect(drafts).toHaveLength(1);
    expect(drafts[0]).toMatchObject({ kind: 'other', argv: ['/bin/sh', '-c', 'touch dist/stamp'], outputs: ['/proj/dist/stamp'] });
    expect(classify('make -C lib && cp lib/libx.a dist/libx.a').drafts).toEqual([
      expect.objectContaining({ kind: 'copy', argv: ['cp', 'lib/libx.a', 'dist/libx.a'], outputs: ['/proj/dist/libx.a'] }),
    ]);
  });

  it('does not treat make as recursive when no make names are given (Ninja edges)', () => {
    expect(classify('make -C external', ROOT, ninja).drafts[0].kind).toBe('other');
  });

  it('drops lines that only print', () => {
    expect(classify('echo "Building the library"').drafts).toEqual([]);
    expect(classify("printf '%s\\n' done; true").drafts).toEqual([]);
  });

  it('does not drop echo that writes a file', () => {
    const [draft] = classify("echo '#define V 1' > gen/v.h").drafts;
    expect(draft).toMatchObject({ kind: 'other', outputs: ['/proj/gen/v.h'] });
  });

  it('runs tool commands with shell expansions or unknown cd targets as whole-line shell steps', () => {
    expect(classify('cc $(pkg-config --cflags x) -c a.c').drafts[0].kind).toBe('other');
    expect(classify('ar rcs libx.a *.o').drafts[0].kind).toBe('other');
    expect(classify('cd $OBJDIR && cc -c a.c').drafts[0].kind).toBe('other');
    expect(classify('if true; then cc -c a.c; fi').drafts[0].kind).toBe('other');
  });

  it('passes leading variable assignments of a tool command as its environment', () => {
    const [draft] = classify('SOURCE_DATE_EPOCH=0 cc -c a.c').drafts;
    expect(draft).toMatchObject({ kind: 'compile', argv: ['cc', '-c', 'a.c'], env: { SOURCE_DATE_EPOCH: '0' } });
  });

  it('treats a line that is not complete shell syntax as a shell step', () => {
    const [draft] = classify("echo don't").drafts;
    expect(draft).toMatchObject({ kind: 'other', argv: ['/bin/sh', '-c', "echo don't"] });
  });
});
