/**
 * Settings users give every time, from three places: command-line flags win,
 * then environment variables (ORION_HEAD, ORION_CACHE_DIR, ORION_JOBS), then the
 * project file `orion.json` at the project root, then defaults.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { UsageError, parseHostPort, parsePositiveInt } from './options.js';

export const PROJECT_FILE = 'orion.json';

export interface ProjectConfig {
  /** HOST:PORT of the head to build on. */
  head?: string;
  /** Local cache directory (relative paths are relative to orion.json). */
  cacheDir?: string;
  jobs?: number;
  /** Targets and VAR=value overrides for make, used when none are given on the command line. */
  makeArgs?: string[];
}

const KEYS = ['head', 'cacheDir', 'jobs', 'makeArgs'] as const;

/** "line L, column C" for a character offset. */
function lineColumn(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return `line ${line}, column ${offset - before.lastIndexOf('\n')}`;
}

/** Parses and validates orion.json's text; errors name `file` and the problem. */
export function parseProjectConfig(text: string, file: string): ProjectConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const msg = (err as Error).message;
    const pos = /at position (\d+)/.exec(msg);
    const where = pos && !/line \d+/.test(msg) ? ` (${lineColumn(text, Number(pos[1]))})` : '';
    throw new UsageError(`${file}: not valid JSON: ${msg}${where}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new UsageError(`${file}: expected a JSON object like {"head": "10.0.0.1:50050", "jobs": 8}, got ${Array.isArray(raw) ? 'an array' : JSON.stringify(raw)}`);
  }
  const obj = raw as Record<string, unknown>;
  const unknown = Object.keys(obj).filter((k) => !(KEYS as readonly string[]).includes(k) && k !== '$schema');
  if (unknown.length > 0) throw new UsageError(`${file}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (known keys: ${KEYS.join(', ')})`);
  const config: ProjectConfig = {};
  const bad = (key: string, what: string) => new UsageError(`${file}: "${key}" must be ${what}, got ${JSON.stringify(obj[key])}`);
  if (obj.head !== undefined) {
    if (typeof obj.head !== 'string') throw bad('head', 'a "HOST:PORT" string');
    try {
      config.head = parseHostPort(obj.head, `${file}: "head"`);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (obj.cacheDir !== undefined) {
    if (typeof obj.cacheDir !== 'string' || obj.cacheDir.trim() === '') throw bad('cacheDir', 'a non-empty path string');
    config.cacheDir = path.resolve(path.dirname(file), obj.cacheDir);
  }
  if (obj.jobs !== undefined) {
    if (typeof obj.jobs !== 'number' || !Number.isInteger(obj.jobs) || obj.jobs < 1 || obj.jobs > 1_000_000) throw bad('jobs', 'a whole number from 1 to 1000000');
    config.jobs = obj.jobs;
  }
  if (obj.makeArgs !== undefined) {
    if (!Array.isArray(obj.makeArgs) || !obj.makeArgs.every((a) => typeof a === 'string')) throw bad('makeArgs', 'an array of strings, like ["-j1", "MALLOC=libc", "all"]');
    config.makeArgs = obj.makeArgs as string[];
  }
  return config;
}

/** orion.json in `dir`, or an empty config when there is none. */
export async function loadProjectConfig(dir: string): Promise<{ file?: string; config: ProjectConfig }> {
  const file = path.join(path.resolve(dir), PROJECT_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { config: {} };
    throw new UsageError(`${file}: cannot read: ${(err as Error).message}`);
  }
  return { file, config: parseProjectConfig(text, file) };
}

export interface BuildSettings {
  head?: string;
  cacheDir?: string;
  jobs?: number;
  makeArgs: string[];
  /** Where each setting came from, for --verbose. */
  sources: Partial<Record<keyof ProjectConfig, 'flag' | 'env' | 'orion.json'>>;
}

/** Merges flags, environment and project file: flags win, then the environment, then orion.json. */
export function resolveBuildSettings(flags: ProjectConfig, env: Record<string, string | undefined>, project: ProjectConfig): BuildSettings {
  const sources: BuildSettings['sources'] = {};
  const pick = <K extends keyof ProjectConfig>(key: K, fromEnv: ProjectConfig[K] | undefined): ProjectConfig[K] | undefined => {
    const isSet = (v: unknown) => v !== undefined && !(Array.isArray(v) && v.length === 0);
    if (isSet(flags[key])) {
      sources[key] = 'flag';
      return flags[key];
    }
    if (isSet(fromEnv)) {
      sources[key] = 'env';
      return fromEnv;
    }
    if (isSet(project[key])) {
      sources[key] = 'orion.json';
      return project[key];
    }
    return undefined;
  };
  const envHead = env.ORION_HEAD ? parseHostPort(env.ORION_HEAD, 'ORION_HEAD') : undefined;
  const envJobs = env.ORION_JOBS ? parsePositiveInt(env.ORION_JOBS, 'ORION_JOBS') : undefined;
  const envCache = env.ORION_CACHE_DIR ? path.resolve(env.ORION_CACHE_DIR) : undefined;
  return {
    head: pick('head', envHead),
    cacheDir: pick('cacheDir', envCache),
    jobs: pick('jobs', envJobs),
    makeArgs: pick('makeArgs', undefined) ?? [],
    sources,
  };
}
