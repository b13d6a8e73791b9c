/**
 * What a compile command line tells Orion about the files it reads: its
 * sources, include search paths, forced includes and dependency-file flags.
 */
import path from 'node:path';
import { libraryFiles } from '../../dag-extractor/tool-invocation.js';

export interface CompilerArgs {
  sources: string[];
  /** Directories searched for "quoted" includes only (-iquote). */
  quoteDirs: string[];
  /** Directories searched for both forms, in order (-I, then -isystem, then -idirafter). */
  searchDirs: string[];
  /** Files included before the source (-include, -imacros). */
  forcedIncludes: string[];
  /** The command already writes a dependency file (-M, -MM, -MD, -MMD). */
  hasDepFlags: boolean;
  /** Where -MD/-MMD writes its dependency file, when it does. */
  depFile?: string;
  output?: string;
}

const SOURCE_EXT = /\.(c|cc|cp|cpp|cxx|c\+\+|C|CPP|m|mm|S|s|sx|i|ii)$/;
const VALUE_OPTIONS = new Set([
  '-o', '-D', '-U', '-MT', '-MQ', '-MF', '-x', '-Xlinker', '-Xassembler', '-Xpreprocessor', '-Xclang', '-u', '-T', '-z',
  '-e', '-aux-info', '-dumpbase', '-dumpbase-ext', '-dumpdir', '--param', '-arch', '-target', '-B', '--sysroot', '-specs',
  '-iprefix', '-iwithprefix', '-iwithprefixbefore', '-isysroot', '-imultilib',
]);

/** Parses a compiler driver's argv (argv[0] is the compiler), resolving paths against cwd. */
export function parseCompilerArgs(argv: readonly string[], cwd: string): CompilerArgs {
  const r: CompilerArgs = { sources: [], quoteDirs: [], searchDirs: [], forcedIncludes: [], hasDepFlags: false };
  const isystem: string[] = [];
  const idirafter: string[] = [];
  let mfFile: string | undefined;
  let md = false;
  const abs = (p: string) => path.resolve(cwd, p);
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => argv[++i] ?? '';
    const joined = (flag: string) => (a.length > flag.length ? a.slice(flag.length) : next());
    if (a === '-I' || (a.startsWith('-I') && a !== '-I-')) r.searchDirs.push(abs(joined('-I')));
    else if (a.startsWith('-iquote')) r.quoteDirs.push(abs(joined('-iquote')));
    else if (a.startsWith('-isystem')) isystem.push(abs(joined('-isystem')));
    else if (a.startsWith('-idirafter')) idirafter.push(abs(joined('-idirafter')));
    else if (a === '-include' || a === '-imacros') r.forcedIncludes.push(abs(next()));
    else if (a === '-MD' || a === '-MMD') {
      md = true;
      r.hasDepFlags = true;
    } else if (a === '-M' || a === '-MM') r.hasDepFlags = true;
    else if (a === '-MF') mfFile = abs(next());
    else if (a.startsWith('-MF')) mfFile = abs(a.slice(3));
    else if (a === '-o') r.output = abs(next());
    else if (a.startsWith('-o') && a.length > 2) r.output = abs(a.slice(2));
    else if (VALUE_OPTIONS.has(a)) i++;
    else if (!a.startsWith('-') && SOURCE_EXT.test(a)) r.sources.push(abs(a));
  }
  r.searchDirs.push(...isystem, ...idirafter);
  if (md) {
    if (mfFile) r.depFile = mfFile;
    else if (r.output) r.depFile = r.output.replace(/\.[^./]*$/, '') + '.d';
    else if (r.sources[0]) r.depFile = path.join(cwd, path.basename(r.sources[0]).replace(/\.[^.]*$/, '.d'));
  }
  return r;
}


/**
 * Files a link (or any command but a compile) may read besides its plain
 * arguments' files, as absolute paths for the caller to keep when they exist:
 * the libraries `-l` finds in each `-L` directory (`libX.so`, `libX.a`, or
 * `-l:file`), linker scripts (`-T`), and file values passed through to the
 * linker (`-Wl,--version-script=v.map`, `-Xlinker --dynamic-list=d`).
 * An over-approximation: a file that does not change the output costs a miss.
 */
export function linkerReads(argv: readonly string[], cwd: string): string[] {
  const files: string[] = [];
  const libDirs: string[] = [];
  const libs: string[] = [];
  const abs = (p: string) => path.resolve(cwd, p);
  const linkerArg = (x: string) => {
    if (!x.startsWith('-')) files.push(abs(x));
    else if (x.includes('=')) files.push(abs(x.slice(x.indexOf('=') + 1)));
    else if (x.startsWith('-T') && x.length > 2) files.push(abs(x.slice(2)));
  };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => argv[++i] ?? '';
    if (!a.startsWith('-')) files.push(abs(a));
    else if (a === '-L') libDirs.push(abs(next()));
    else if (a.startsWith('-L')) libDirs.push(abs(a.slice(2)));
    else if (a === '-l') libs.push(next());
    else if (a.startsWith('-l')) libs.push(a.slice(2));
    else if (a === '-T') files.push(abs(next()));
    else if (a.startsWith('-T')) files.push(abs(a.slice(2)));
    else if (a === '-Xlinker') linkerArg(next());
    else if (a.startsWith('-Wl,')) for (const piece of a.slice(4).split(',')) linkerArg(piece);
    else if (a.startsWith('-specs=') || a.startsWith('--specs=')) files.push(abs(a.slice(a.indexOf('=') + 1)));
  }
  for (const lib of libs) for (const dir of libDirs) files.push(...libraryFiles(lib, dir));
  return [...new Set(files)];
}
