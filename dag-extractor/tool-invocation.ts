/**
 * Recognises the commands Orion can run as cacheable actions: compiler driver
 * compiles and links, `ar` archives and `ranlib`, plain `install SRC DST` and
 * `cp SRC DST` copies, and works out the files each one reads and writes from
 * its argv.
 */
import path from 'node:path';
import { isUnder, replaceExtension, resolveIn, unique } from './paths.js';

export type ToolKind = 'compile' | 'archive' | 'link' | 'copy';

export interface ToolInvocation {
  kind: ToolKind;
  /** Short verb for labels: CC, CXX, AS, AR, RANLIB, LD, INSTALL or CP. */
  verb: string;
  /** The command to run (a `ccache` prefix is removed: Orion's action cache takes its place). */
  argv: string[];
  /** Absolute paths the command reads. */
  inputs: string[];
  /** Absolute paths the command reads if an earlier action produces them (libraries found through -L/-l, an archive updated in place). */
  optionalInputs: string[];
  /** Absolute paths the command writes. */
  outputs: string[];
}

const COMPILER = /^(?:.+-)?(?:gcc|cc|clang|c\+\+|g\+\+|clang\+\+)(?:-\d+(?:\.\d+)*)?$/;
const CXX_DRIVER = /(?:c\+\+|g\+\+|clang\+\+)(?:-\d+(?:\.\d+)*)?$/;
const ARCHIVER = /^(?:.+-)?(?:gcc-|llvm-)?ar(?:-\d+(?:\.\d+)*)?$/;
const RANLIB = /^(?:.+-)?(?:gcc-|llvm-)?ranlib(?:-\d+(?:\.\d+)*)?$/;
const LAUNCHERS = new Set(['ccache']);

const CXX_EXTENSIONS = new Set(['.cc', '.cp', '.cpp', '.cxx', '.c++', '.C', '.CPP', '.ii', '.mm']);
const ASM_EXTENSIONS = new Set(['.s', '.S', '.sx']);

/** Compiler options whose value is the next argument when written on their own. */
const OPTIONS_WITH_VALUE = new Set([
  '-I', '-D', '-U', '-include', '-imacros', '-isystem', '-idirafter', '-iquote', '-iprefix', '-iwithprefix',
  '-iwithprefixbefore', '-isysroot', '-imultilib', '-MT', '-MQ', '-Xlinker', '-Xassembler', '-Xpreprocessor',
  '-Xclang', '-u', '-T', '-z', '-e', '-aux-info', '-dumpbase', '-dumpbase-ext', '-dumpdir', '--param', '-arch',
  '-target', '-B', '--sysroot', '-specs', '-framework', '-F', '-gcc-toolchain', '-ivfsoverlay', '-resource-dir',
  '-isystem-after', '--serialize-diagnostics',
]);
const AR_OPTIONS_WITH_VALUE = new Set(['--plugin', '--target', '--output']);

const SHELLS = new Set(['sh', 'bash', 'dash']);

/**
 * Where the compiler's own argv starts in `argv`: 0 for a compiler run directly, and after
 * the libtool options for `[sh] path/libtool [--tag=CC] [--silent] --mode=compile CC ARGS`,
 * which runs CC ARGS (twice: with -fPIC into .libs/ and without). The compiler is what the
 * action's key names and what a node checks it has; its ARGS tell the sources and headers.
 */
export function compilerArgvStart(argv: readonly string[]): number {
  let i = libtoolWord(argv);
  if (i < 0) return 0;
  let compile = false;
  for (i++; i < argv.length && argv[i]!.startsWith('-'); i++) {
    if (argv[i] === '--mode=compile') compile = true;
    else if (argv[i] === '--mode' && argv[i + 1] === 'compile') {
      compile = true;
      i++;
    } else if (argv[i] === '--tag' || argv[i] === '--mode') i++;
  }
  return compile && i < argv.length && COMPILER.test(path.basename(argv[i]!)) ? i : 0;
}

/** The index of the libtool script in `[sh] path/libtool ...`, or -1. */
function libtoolWord(argv: readonly string[]): number {
  const i = argv.length > 1 && SHELLS.has(path.basename(argv[0] ?? '')) ? 1 : 0;
  return /(?:^|\/)libtool$/.test(argv[i] ?? '') ? i : -1;
}

/**
 * A libtool compile: its compile's argv classified, with what libtool writes besides: the
 * `.lo` named by -o, and the objects it lists (`.libs/X.o` with -fPIC, `X.o` without; one of
 * them is missing when the package builds only shared or only static libraries).
 */
function classifyLibtoolCompile(argv: readonly string[], start: number, cwd: string, root: string): ToolInvocation | undefined {
  const inner = classifyCompilerDriver(argv.slice(start), cwd, root);
  if (inner?.kind !== 'compile') return undefined;
  const lo = inner.outputs[0]!;
  if (!lo.endsWith('.lo')) return undefined;
  const base = path.basename(lo, '.lo');
  const objects = [path.join(path.dirname(lo), '.libs', `${base}.o`), path.join(path.dirname(lo), `${base}.o`)];
  const script = resolveIn(cwd, argv[libtoolWord(argv)]!);
  return {
    ...inner,
    argv: [...argv],
    inputs: unique([...inner.inputs, ...(isUnder(root, script) ? [script] : [])]),
    outputs: unique([lo, ...objects, ...inner.outputs.slice(1)]),
  };
}

/** Classifies argv run in `cwd`; undefined when it is not a compile, archive, link or copy step. */
export function classifyToolInvocation(argv: readonly string[], cwd: string, root: string): ToolInvocation | undefined {
  const libtool = compilerArgvStart(argv);
  if (libtool > 0) return classifyLibtoolCompile(argv, libtool, cwd, root);
  let args = [...argv];
  if (args.length > 1 && LAUNCHERS.has(path.basename(args[0]))) args = args.slice(1);
  if (args.length === 0) return undefined;
  const name = path.basename(args[0]);
  if (COMPILER.test(name)) return classifyCompilerDriver(args, cwd, root);
  if (ARCHIVER.test(name)) return classifyArchiver(args, cwd);
  if (RANLIB.test(name)) return classifyRanlib(args, cwd);
  if (name === 'install' || name === 'cp') return classifyCopy(args, cwd, root);
  return undefined;
}

interface DriverArgs {
  positional: string[];
  output?: string;
  compileOnly: boolean;
  /** -E, -S, -M, -MM or -fsyntax-only: the command stops before producing an object. */
  stopsEarly: boolean;
  depfileRequested: boolean;
  depfile?: string;
  splitDwarf: boolean;
  language?: string;
  libraries: string[];
  libraryDirs: string[];
}

function parseDriverArgs(args: string[]): DriverArgs | undefined {
  const parsed: DriverArgs = {
    positional: [], compileOnly: false, stopsEarly: false, depfileRequested: false, splitDwarf: false, libraries: [], libraryDirs: [],
  };
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    const takeValue = (): string | undefined => args[++i];
    if (a === '-o') parsed.output = takeValue();
    else if (a === '-c') parsed.compileOnly = true;
    else if (a === '-E' || a === '-S' || a === '-M' || a === '-MM' || a === '-fsyntax-only') parsed.stopsEarly = true;
    else if (a === '-MD' || a === '-MMD') parsed.depfileRequested = true;
    else if (a === '-MF') parsed.depfile = takeValue();
    else if (a.startsWith('-MF')) parsed.depfile = a.slice(3);
    else if (a === '-x') parsed.language = takeValue();
    else if (a.startsWith('-x')) parsed.language = a.slice(2);
    else if (a === '-gsplit-dwarf') parsed.splitDwarf = true;
    else if (a.startsWith('-Wp,')) {
      const [flag, file] = a.slice(4).split(',');
      if ((flag === '-MD' || flag === '-MMD') && file) {
        parsed.depfileRequested = true;
        parsed.depfile = file;
      }
    } else if (a === '-l') {
      const lib = takeValue();
      if (lib !== undefined) parsed.libraries.push(lib);
    } else if (a.startsWith('-l')) parsed.libraries.push(a.slice(2));
    else if (a === '-L') {
      const dir = takeValue();
      if (dir !== undefined) parsed.libraryDirs.push(dir);
    } else if (a.startsWith('-L')) parsed.libraryDirs.push(a.slice(2));
    else if (OPTIONS_WITH_VALUE.has(a)) i++;
    else if (a.startsWith('-o')) parsed.output = a.slice(2);
    // A response file or stdin hides the real arguments.
    else if (a.startsWith('@') || a === '-') return undefined;
    else if (!a.startsWith('-')) parsed.positional.push(a);
  }
  if (parsed.output === '') return undefined;
  return parsed;
}

function classifyCompilerDriver(args: string[], cwd: string, root: string): ToolInvocation | undefined {
  const parsed = parseDriverArgs(args);
  if (!parsed || parsed.stopsEarly) return undefined;
  if (parsed.compileOnly) {
    if (parsed.positional.length === 0 || (parsed.output !== undefined && parsed.positional.length > 1)) return undefined;
    const sources = parsed.positional.map((s) => resolveIn(cwd, s));
    const objects = parsed.output !== undefined
      ? [resolveIn(cwd, parsed.output)]
      : parsed.positional.map((s) => resolveIn(cwd, replaceExtension(path.basename(s), '.o')));
    const outputs = [...objects];
    if (parsed.depfile !== undefined) outputs.push(resolveIn(cwd, parsed.depfile));
    else if (parsed.depfileRequested) outputs.push(...objects.map((o) => replaceExtension(o, '.d')));
    if (parsed.splitDwarf) outputs.push(...objects.map((o) => replaceExtension(o, '.dwo')));
    return {
      kind: 'compile',
      verb: compileVerb(args[0], parsed),
      argv: args,
      inputs: unique(sources),
      optionalInputs: [],
      outputs: unique(outputs),
    };
  }
  if (parsed.output === undefined) return undefined;
  const projectDirs = parsed.libraryDirs.map((d) => resolveIn(cwd, d)).filter((d) => isUnder(root, d));
  const libraryCandidates = parsed.libraries.flatMap((lib) => projectDirs.flatMap((dir) => libraryFiles(lib, dir)));
  return {
    kind: 'link',
    verb: 'LD',
    argv: args,
    inputs: unique(parsed.positional.map((p) => resolveIn(cwd, p)).filter((p) => isUnder(root, p))),
    optionalInputs: unique(libraryCandidates),
    outputs: [resolveIn(cwd, parsed.output)],
  };
}

/** The files `-l LIB` may name in directory `dir`: `libLIB.so` and `libLIB.a`, or the file itself for `-l:FILE`. */
export function libraryFiles(lib: string, dir: string): string[] {
  return lib.startsWith(':') ? [path.join(dir, lib.slice(1))] : [path.join(dir, `lib${lib}.so`), path.join(dir, `lib${lib}.a`)];
}

function compileVerb(driver: string, parsed: DriverArgs): string {
  const language = parsed.language;
  if (language !== undefined) {
    if (language.startsWith('c++') || language.startsWith('objective-c++')) return 'CXX';
    if (language.startsWith('assembler')) return 'AS';
    return 'CC';
  }
  const ext = path.extname(parsed.positional[0]);
  if (ASM_EXTENSIONS.has(ext)) return 'AS';
  if (CXX_EXTENSIONS.has(ext) || CXX_DRIVER.test(path.basename(driver))) return 'CXX';
  return 'CC';
}

/** `ar` creating or updating an archive (operations r and q), or `ar s` indexing one in place. */
function classifyArchiver(args: string[], cwd: string): ToolInvocation | undefined {
  let i = 1;
  while (i < args.length && args[i].startsWith('--')) i += AR_OPTIONS_WITH_VALUE.has(args[i]) ? 2 : 1;
  if (i >= args.length) return undefined;
  // The key letters come first, either bare ("rcs") or as one or more dash options ("-rcs", "-r -c").
  let letters = args[i].replace(/^-/, '');
  i++;
  if (args[i - 1].startsWith('-')) {
    while (i < args.length && /^-[A-Za-z]+$/.test(args[i])) letters += args[i++].slice(1);
  }
  const operation = [...letters].find((l) => 'dmpqrstx'.includes(l));
  if (operation === undefined) return undefined;
  if ((operation === 'r' || operation === 'm') && /[abi]/.test(letters)) i++; // relpos member name
  if (letters.includes('N')) i++; // count
  const archive = args[i];
  if (archive === undefined) return undefined;
  const archivePath = resolveIn(cwd, archive);
  const members = args.slice(i + 1).map((m) => resolveIn(cwd, m));
  if (operation === 'r' || operation === 'q') {
    return { kind: 'archive', verb: 'AR', argv: args, inputs: unique(members), optionalInputs: [archivePath], outputs: [archivePath] };
  }
  if (operation === 's' && members.length === 0) {
    return { kind: 'archive', verb: 'RANLIB', argv: args, inputs: [archivePath], optionalInputs: [], outputs: [archivePath] };
  }
  return undefined;
}

/** `ranlib` rewrites each archive in place: it reads and writes the same file. */
function classifyRanlib(args: string[], cwd: string): ToolInvocation | undefined {
  const archives: string[] = [];
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    if (a === '--plugin') i++;
    else if (!a.startsWith('-')) archives.push(resolveIn(cwd, a));
  }
  if (archives.length === 0) return undefined;
  return { kind: 'archive', verb: 'RANLIB', argv: args, inputs: unique(archives), optionalInputs: [], outputs: unique(archives) };
}

/** Modes a restored output reproduces exactly (outputs are restored 0755 or 0644). */
const RESTORABLE_MODES = new Set(['755', '0755', '644', '0644']);

/**
 * A copy of one file to a file path: `install [-c] [-m 755|644] SRC DST` (mode
 * 0755 without -m) or `cp [-f] SRC DST` (Redis installs redis-server as
 * redis-sentinel this way). Its output depends on SRC's content alone, so it is
 * cached like a compile instead of running as a step with unknown effects.
 * Anything else (other options, several sources, a destination directory named
 * with a trailing slash, a file outside the project: `make install`) stays a step. A destination that turns out to be an
 * existing directory is seen at run time (the build runs the copy as a step).
 */
function classifyCopy(args: string[], cwd: string, root: string): ToolInvocation | undefined {
  const install = path.basename(args[0]) === 'install';
  const operands: string[] = [];
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('-') || a === '-') operands.push(a);
    else if (install && a === '-c') continue;
    else if (install && (a === '-m' || a === '--mode')) {
      if (!RESTORABLE_MODES.has(args[++i] ?? '')) return undefined;
    } else if (install && (a.startsWith('--mode=') || /^-m\d/.test(a))) {
      if (!RESTORABLE_MODES.has(a.startsWith('--') ? a.slice('--mode='.length) : a.slice(2))) return undefined;
    } else if (!install && a === '-f') continue;
    else return undefined;
  }
  if (operands.length !== 2 || operands.some((o) => o.endsWith('/') || o === '.' || o === '..')) return undefined;
  const [src, dst] = operands.map((o) => resolveIn(cwd, o));
  if (src === dst || !isUnder(root, src) || !isUnder(root, dst)) return undefined;
  return { kind: 'copy', verb: install ? 'INSTALL' : 'CP', argv: args, inputs: [src], optionalInputs: [], outputs: [dst] };
}
