/**
 * Turns a build action into its REAPI Action: the cache key. The key covers
 * exactly what the action reads: its command line, the tool binary's content,
 * and the source and header files (scanned, plus whatever the compiler's own
 * dependency output showed earlier), so an unrelated edit never misses and a
 * relevant edit never hits.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { lstat, realpath } from 'node:fs/promises';
import path from 'node:path';
import { encodeActionMessage, encodeCommandMessage } from '../../cas/proto-wire.js';
import { digestOf } from '../../cas/digest.js';
import type { MerkleTree, TreeFileEntry } from '../../cas/merkle.js';
import type { Action, ActionResult, Command, Digest } from '../../cas/types.js';
import type { BuildAction } from '../../dag-extractor/types.js';
import { DEPFILE_PROPERTY, MOUNT_PATH_PROPERTY, TOOL_ARG_PROPERTY, TOOL_PROPERTY } from '../../common/platform-properties.js';
import { compilerArgvStart } from '../../dag-extractor/tool-invocation.js';
import { archiveStartingPoint } from './archive-members.js';
import { linkerReads, parseCompilerArgs, type CompilerArgs } from './compiler-args.js';
import type { DepManifest } from './dep-manifest.js';
import type { IncludeScanner } from './include-scanner.js';
import type { FileState, ProjectFiles } from './project-files.js';
import type { ToolResolver } from '../../common/tool-resolver.js';
import { inputRootOf, type TreeMemo } from './tree-memo.js';

/**
 * Environment variables that reach the key (and remote actions); everything else is the machine's own.
 * GCC's and Clang's search paths (CPATH, LIBRARY_PATH, ...) change which headers and libraries a
 * command finds: the files read are keyed by their contents, but only under the paths that found them.
 */
export const KEYED_ENV = [
  'SOURCE_DATE_EPOCH', 'LANG', 'LC_ALL', 'LC_MESSAGES', 'LC_CTYPE', 'TZ',
  'CPATH', 'C_INCLUDE_PATH', 'CPLUS_INCLUDE_PATH', 'OBJC_INCLUDE_PATH', 'LIBRARY_PATH', 'GCC_EXEC_PREFIX', 'COMPILER_PATH',
];

export interface ActionKey {
  actionDigest: Digest;
  action: Action;
  command: Command;
  /** Encoded Action, Command and the key input root's directories, by digest key (built on first use). */
  readonly blobs: Map<string, Buffer>;
  inputRoot: MerkleTree;
  /** Absolute paths of the files the key covers, with their digest ('-' when absent). */
  inputs: Map<string, string>;
  compiler?: CompilerArgs;
  /** Relative (to cwd) path of the dependency file executors write for this compile, when they add one. */
  depfileRel?: string;
  /** Where the compile's dependency output will be (the command's own -MD file, or the one Orion adds). */
  depfileAbs?: string;
  /** The action can run on a remote node (all outputs under its working directory; not a copy). */
  remotable: boolean;
  /**
   * With `produced` (computeActionKey's option): inputs other actions of the build write,
   * left out of inputRoot (and so of actionDigest) for the head to add once they exist.
   */
  producedInputs?: { path: string; producer: string }[];
}

/** A node's result without the dependency file Orion asked it for: that file is no build output. */
export function withoutOrionDepfile(result: ActionResult, key: Pick<ActionKey, 'depfileRel'>): ActionResult {
  return key.depfileRel ? { ...result, outputFiles: result.outputFiles.filter((f) => f.path !== key.depfileRel) } : result;
}

export interface KeyDeps {
  files: ProjectFiles;
  scanner: IncludeScanner;
  manifest: DepManifest;
  tools: ToolResolver;
  env: Record<string, string | undefined>;
  /** Input roots built by earlier builds (their digests, by what they hold). */
  trees?: TreeMemo;
  /** The commit and tags checked out (git-identity.ts): part of every step's key. */
  git?: string;
  /** `NAME=value` of the environment variables the build files mention (graph-cache.ts): part of every step's key. */
  makeEnv?: string[];
}

function relTo(from: string, to: string): string {
  const r = path.relative(from, to);
  return r === '' ? '.' : r;
}

export interface KeyOptions {
  /**
   * Absolute path -> id of the action that writes it. Such inputs are not read from
   * disk: they become producedInputs (a whole-DAG build's head resolves them).
   */
  produced?: Pick<ReadonlyMap<string, string>, 'get' | 'has'>;
}

/** The file a symbolic link resolves to, and its state; undefined when `file` is no link to a file. */
export async function throughSymlink(file: string, files: ProjectFiles): Promise<{ target: string; state: FileState } | undefined> {
  const st = await lstat(file).catch(() => undefined);
  if (!st?.isSymbolicLink()) return undefined;
  const target = await realpath(file).catch(() => undefined);
  const state = target === undefined ? undefined : await files.state(target);
  return target !== undefined && state ? { target, state } : undefined;
}

/**
 * Starts finding and digesting the tools of the graph's cacheable actions (ToolResolver.warm): with
 * a cold cache, the compiler's digest (cc1, as, ld: ~0.3-0.4 s on a 2-core VM) is taken while
 * make's first steps run, not between them and the first compile.
 */
export function warmTools(actions: readonly BuildAction[], deps: Pick<KeyDeps, 'tools' | 'env'>): void {
  if (!deps.tools.warm) return;
  for (const a of actions) {
    if (!a.cacheable) continue;
    const name = a.argv[a.kind === 'compile' ? compilerArgvStart(a.argv) : 0];
    if (name) deps.tools.warm(name, a.cwd, a.env?.PATH ?? deps.env.PATH);
  }
}

export async function computeActionKey(a: BuildAction, deps: KeyDeps, opts: KeyOptions = {}): Promise<ActionKey> {
  const produced = opts.produced;
  const producedInputs: { path: string; producer: string }[] = [];
  const root = deps.files.root;
  const inputs = new Set<string>(a.inputs);
  let compiler: CompilerArgs | undefined;
  // A link can compile too (`cc -o prog main.c`): its sources' headers are inputs as a compile's are.
  // A compile run through libtool: the compiler's argv is the end of the command.
  const toolArg = a.kind === 'compile' ? compilerArgvStart(a.argv) : 0;
  const parsed = a.kind === 'compile' || a.kind === 'link' ? parseCompilerArgs(a.argv.slice(toolArg), a.cwd) : undefined;
  if (parsed && (a.kind === 'compile' || parsed.sources.length > 0)) {
    compiler = parsed;
    const start = [...compiler.sources, ...compiler.forcedIncludes];
    for (const f of start) inputs.add(f);
    const scanned = await deps.scanner.scan(start, compiler.quoteDirs, compiler.searchDirs);
    for (const f of scanned.found) inputs.add(f);
  }
  for (const f of deps.manifest.extraInputs(a.id)) inputs.add(f);
  // Project files named on the command line are read too: plain arguments, libraries found through
  // -L/-l (a prebuilt one in the tree), linker scripts and version maps.
  if (a.kind !== 'compile') {
    for (const abs of linkerReads(a.argv, a.cwd)) {
      if (abs.startsWith(root + '/') && !a.outputs.includes(abs) && ((produced?.has(abs) ?? false) || (await deps.files.state(abs)) || (await throughSymlink(abs, deps.files)))) inputs.add(abs);
    }
  }
  for (const o of a.outputs) if (!a.inputs.includes(o)) inputs.delete(o);
  // An archive left by an earlier build with other members: `ar r` keeps them (archive-members.ts).
  const startingPoint = archiveStartingPoint(a);
  if (startingPoint) inputs.add(startingPoint);

  const tree: TreeFileEntry[] = [];
  const external: string[] = [];
  const covered = new Map<string, string>();
  const sorted = [...inputs].sort().filter((f) => {
    const producer = produced?.get(f);
    if (producer === undefined || producer === a.id) return true;
    const rel = path.relative(root, f);
    if (rel.startsWith('..') || path.isAbsolute(rel)) return true;
    producedInputs.push({ path: rel, producer });
    covered.set(f, '?');
    return false;
  });
  const states = await Promise.all(sorted.map((f) => deps.files.state(f)));
  // A symbolic link (include/x.h -> ../real/x.h) is read through: the key holds what it points to.
  const linked = await Promise.all(sorted.map((f, i) => (states[i] ? undefined : throughSymlink(f, deps.files))));
  sorted.forEach((f, i) => {
    const s = states[i];
    const l = linked[i];
    covered.set(f, s ? s.digest.hash : l ? l.state.digest.hash : '-');
    const rel = path.relative(root, f);
    if (s && !rel.startsWith('..') && !path.isAbsolute(rel)) tree.push({ path: rel, digest: s.digest, isExecutable: s.isExecutable });
    else if (l) {
      covered.set(l.target, l.state.digest.hash);
      external.push(`${f}\u0000->${l.target}\u0000${l.state.digest.hash}/${l.state.digest.sizeBytes}`);
    } else external.push(`${f}\u0000${s ? `${s.digest.hash}/${s.digest.sizeBytes}` : '-'}`);
  });
  const inputRoot = inputRootOf(tree, deps.trees);

  const tool = await deps.tools.resolve(a.argv[toolArg]!, a.cwd, a.env?.PATH ?? deps.env.PATH);
  const cwdRel = path.relative(root, a.cwd);
  const outputsRel = a.outputs.map((o) => path.relative(a.cwd, o)).sort();
  // A copy runs where its source already is: shipping it to a node and back costs more than the copy.
  const remotable = a.kind !== 'copy' && !cwdRel.startsWith('..') && outputsRel.every((o) => !o.startsWith('..') && !path.isAbsolute(o));
  let depfileRel: string | undefined;
  let depfileAbs: string | undefined;
  if (compiler) {
    if (compiler.hasDepFlags) depfileAbs = compiler.depFile;
    else {
      depfileRel = `.orion-deps/${a.id}.d`;
      depfileAbs = path.join(a.cwd, depfileRel);
    }
  }
  const properties = [
    { name: MOUNT_PATH_PROPERTY, value: root },
    { name: TOOL_PROPERTY, value: tool ? `${tool.path}@${tool.identity}` : `${a.argv[toolArg]}@missing` },
  ];
  if (toolArg > 0) properties.push({ name: TOOL_ARG_PROPERTY, value: String(toolArg) });
  if (external.length > 0) properties.push({ name: 'orion-external-inputs', value: createHash('sha256').update(external.sort().join('\n')).digest('hex') });
  if (depfileRel) properties.push({ name: DEPFILE_PROPERTY, value: depfileRel });
  properties.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));

  const env = KEYED_ENV.flatMap((name) => {
    const value = a.env?.[name] ?? deps.env[name];
    return value === undefined ? [] : [{ name, value }];
  });
  const command: Command = {
    arguments: [...a.argv],
    environmentVariables: env.sort((x, y) => (x.name < y.name ? -1 : 1)),
    outputPaths: remotable ? outputsRel : [],
    outputFiles: [],
    outputDirectories: [],
    workingDirectory: cwdRel,
    platform: { properties },
  };
  // Outputs outside the working directory cannot be named in REAPI; keep them in the key anyway.
  if (!remotable) command.arguments = [...a.argv, `\u0000orion-outputs:${a.outputs.map((o) => relTo(root, o)).sort().join(':')}`];
  const commandBlob = encodeCommandMessage(command);
  const commandDigest = digestOf(commandBlob);
  const action: Action = { commandDigest, inputRootDigest: inputRoot.rootDigest, doNotCache: false };
  const actionBlob = encodeActionMessage(action);
  const actionDigest = digestOf(actionBlob);
  let blobs: Map<string, Buffer> | undefined;
  return {
    actionDigest,
    action,
    command,
    // A cache hit needs none of them: the input root's Directories are built when first asked for.
    get blobs() {
      if (!blobs) {
        blobs = new Map<string, Buffer>(inputRoot.directories);
        blobs.set(`${commandDigest.hash}/${commandDigest.sizeBytes}`, commandBlob);
        blobs.set(`${actionDigest.hash}/${actionDigest.sizeBytes}`, actionBlob);
      }
      return blobs;
    },
    inputRoot,
    inputs: covered,
    compiler,
    depfileRel,
    depfileAbs,
    remotable,
    ...(produced ? { producedInputs } : {}),
  };
}

/**
 * The first file `key` covers that is no longer as it was keyed: another size or modification
 * time now (a header saved while the compile ran). A result made from such an input may hold
 * either version, so it must not be cached under `key` (ccache's "file changed during
 * compilation"). `outputs` (an archive updated in place) are left out.
 */
export async function inputChangedSinceKeyed(key: ActionKey, outputs: readonly string[], files: ProjectFiles): Promise<string | undefined> {
  for (const [f, hash] of key.inputs) {
    if (hash === '-' || hash === '?' || outputs.includes(f)) continue;
    const keyed = await files.state(f);
    // A symbolic link's own path has no state: the file it points to is checked under its own path.
    if (!keyed) continue;
    // Synchronous: one stat per input of every action run here, a few microseconds each.
    const now = statSync(f, { throwIfNoEntry: false });
    if (keyed.digest.hash !== hash || !now || now.size !== keyed.digest.sizeBytes || now.mtimeMs !== keyed.mtimeMs) return f;
  }
  return undefined;
}
