import { createHash } from 'node:crypto';
import { realpathSync, statSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../cas/atomic-file.js';
import type { StatCache } from '../cas/stat-cache.js';
import type { Digest } from '../cas/types.js';

export interface ResolvedTool {
  path: string;
  /** The binary's content digest. */
  digest: Digest;
  /**
   * What names the toolchain in an action's key (hex SHA-256): the binary's digest, or for a
   * compiler driver (gcc, cc, clang...) the hash of its digest and of the programs it says it
   * runs (cc1, cc1plus, as, collect2, ld): a `cc1` updated behind an unchanged driver (Debian
   * ships them in separate packages) compiles differently.
   */
  identity: string;
}

/** Finds a command's binary (as the shell would, through PATH), its content digest and its toolchain identity. */
export interface ToolResolver {
  resolve(name: string, cwd: string, pathEnv: string | undefined): Promise<ResolvedTool | undefined>;
  /**
   * Does the slow part of a later `resolve` now, in the background: digesting the binaries (a
   * driver's cc1 is tens of MB) and asking a driver for its programs. No answer is kept from it:
   * what it fills is kept by file stat and by binary content, so a tool the build makes or changes
   * before it is used is found as it is then.
   */
  warm?(name: string, cwd: string, pathEnv: string | undefined): void;
}

/** Asks a compiler driver where program `prog` is (`-print-prog-name=PROG`): a path, a bare name (found through PATH), or undefined. */
export type PrintProgName = (driver: string, prog: string, pathEnv: string) => Promise<string | undefined>;

export interface ToolResolverOptions {
  /**
   * Remember each answer for the resolver's lifetime (default true: one build, whose tools do not
   * change under it). A daemon passes false: a compiler upgraded while it runs is found again (the
   * stat cache still spares rehashing an unchanged binary).
   */
  remember?: boolean;
  /** A JSON file keeping what each driver answered, by its path and digest (it never changes for them). */
  companionsFile?: string;
  /** Injected in tests; the default runs the driver. */
  printProgName?: PrintProgName;
}

/** gcc, g++, cc, c++, clang, clang++, with a target prefix (x86_64-linux-gnu-gcc) or a version suffix (gcc-12). */
const DRIVER = /^(?:[\w.+]+-)*(?:gcc|g\+\+|cc|c\+\+|clang|clang\+\+)(?:-[\d.]+)?$/;
/** The programs a driver runs for a compile, an assembly and a link. */
const COMPANIONS = ['cc1', 'cc1plus', 'as', 'collect2', 'ld'];

async function isElf(file: string): Promise<boolean> {
  try {
    const fh = await open(file, 'r');
    try {
      const head = Buffer.alloc(4);
      await fh.read(head, 0, 4, 0);
      return head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

const defaultPrintProgName: PrintProgName = async (driver, prog, pathEnv) => {
  // Loaded here, not with the module: a build that knows its drivers' answers never needs it (~13 ms of start-up).
  const { execa } = await import('execa');
  const r = await execa(driver, [`-print-prog-name=${prog}`], { env: { PATH: pathEnv, LC_ALL: 'C' }, extendEnv: false, reject: false, stdin: 'ignore', timeout: 10_000 });
  const out = typeof r.stdout === 'string' ? r.stdout.trim() : '';
  return r.exitCode === 0 && out && !out.includes('\n') ? out : undefined;
};

export function createToolResolver(statCache: StatCache, opts: ToolResolverOptions = {}): ToolResolver {
  const memo = new Map<string, Promise<ResolvedTool | undefined>>();
  const printProgName = opts.printProgName ?? defaultPrintProgName;
  /** Driver path and digest -> what it printed for each companion ('' for none). */
  let answers: Promise<Map<string, string[]>> | undefined;
  const asked = new Map<string, Promise<string[]>>();
  let saving = Promise.resolve();

  const loadAnswers = () =>
    (answers ??= (async () => {
      if (!opts.companionsFile) return new Map<string, string[]>();
      try {
        const parsed = JSON.parse(await readFile(opts.companionsFile, 'utf8')) as Record<string, unknown>;
        return new Map(Object.entries(parsed).filter((e): e is [string, string[]] => Array.isArray(e[1]) && e[1].every((x) => typeof x === 'string')));
      } catch {
        return new Map<string, string[]>();
      }
    })());

  /** What the driver prints for each companion, asked once per driver binary. */
  async function companionNames(driver: string, digest: Digest, pathEnv: string): Promise<string[]> {
    const key = `${driver}@${digest.hash}`;
    const known = (await loadAnswers()).get(key);
    if (known) return known;
    let p = asked.get(key);
    if (!p) {
      p = (async () => {
        // Only a compiled driver is asked: a script named like one (a project's slow-cc wrapper) is
        // the user's, and running it with other arguments could do anything.
        const printed = (await isElf(driver)) ? await Promise.all(COMPANIONS.map((c) => printProgName(driver, c, pathEnv).catch(() => undefined))) : [];
        const names = printed.map((x) => x ?? '');
        const all = await loadAnswers();
        all.set(key, names);
        if (opts.companionsFile) {
          const file = opts.companionsFile;
          saving = saving.then(() => writeFileAtomic(file, JSON.stringify(Object.fromEntries(all)), { durable: false }).catch(() => undefined));
          await saving;
        }
        return names;
      })();
      asked.set(key, p);
    }
    return p;
  }

  /**
   * The first of `candidates` that is an executable file, its real path and its digest. System calls
   * without the thread pool, the digest from the stat cache when it knows the file: a node resolves
   * the tool of every action it runs (gcc and its five companions: ~20 calls), and each await through
   * the pool cost a busy node more than the calls themselves.
   */
  async function binary(candidates: string[]): Promise<{ path: string; real: string; digest: Digest } | undefined> {
    for (const c of candidates) {
      let real: string;
      let st;
      try {
        const first = statSync(c, { throwIfNoEntry: false });
        if (!first?.isFile() || (first.mode & 0o111) === 0) continue;
        real = realpathSync.native(c);
        st = statSync(real);
      } catch {
        continue; // Not there after all, or a PATH entry that is no directory, or unreadable.
      }
      try {
        return { path: c, real, digest: statCache.peek(real, st) ?? (await statCache.digestFileCached(real, st)) };
      } catch {
        continue;
      }
    }
    return undefined;
  }

  const onPath = (name: string, cwd: string, pathEnv: string) =>
    name.includes('/') ? [path.resolve(cwd, name)] : pathEnv.split(':').filter(Boolean).map((d) => path.join(d, name));

  async function find(name: string, cwd: string, pathEnv: string | undefined): Promise<ResolvedTool | undefined> {
    const searchPath = pathEnv ?? '/usr/local/bin:/usr/bin:/bin';
    const tool = await binary(onPath(name, cwd, searchPath));
    if (!tool) return undefined;
    if (!DRIVER.test(path.basename(tool.real))) return { path: tool.path, digest: tool.digest, identity: tool.digest.hash };
    const names = await companionNames(tool.real, tool.digest, searchPath);
    const h = createHash('sha256').update(`driver ${tool.digest.hash}\n`);
    const parts = await Promise.all(
      names.map(async (printed, i) => {
        // A bare name is what the driver would run from PATH (gcc prints `as`; an absent cc1plus prints `cc1plus`).
        if (!printed) return '';
        const found = await binary(printed.includes('/') ? [printed] : onPath(printed, cwd, searchPath));
        return found ? `${COMPANIONS[i]} ${found.digest.hash}\n` : '';
      }),
    );
    // A program named like a driver that runs none (a script called cc) is named by its own digest.
    if (parts.every((p) => p === '')) return { path: tool.path, digest: tool.digest, identity: tool.digest.hash };
    for (const p of parts) h.update(p);
    return { path: tool.path, digest: tool.digest, identity: h.digest('hex') };
  }

  const keyOf = (name: string, cwd: string, pathEnv: string | undefined) => `${name}\u0000${name.includes('/') ? cwd : ''}\u0000${pathEnv ?? ''}`;
  /** Warm-ups under way: a resolve waits for its key's, then finds the digests and answers it left (no binary hashed twice). */
  const warming = new Map<string, Promise<unknown>>();

  return {
    resolve(name, cwd, pathEnv) {
      const key = keyOf(name, cwd, pathEnv);
      const found = () => {
        const w = warming.get(key);
        return w ? w.then(() => find(name, cwd, pathEnv)) : find(name, cwd, pathEnv);
      };
      if (opts.remember === false) return found();
      let p = memo.get(key);
      if (!p) memo.set(key, (p = found()));
      return p;
    },
    warm(name, cwd, pathEnv) {
      const key = keyOf(name, cwd, pathEnv);
      if (memo.has(key) || warming.has(key)) return;
      const w = find(name, cwd, pathEnv).then(
        () => undefined,
        () => undefined,
      );
      warming.set(key, w);
      void w.then(() => warming.delete(key));
    },
  };
}
