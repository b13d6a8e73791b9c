import { existsSync } from 'node:fs';
import { execa } from 'execa';
import type { ActionRunner, RunSpec } from './runner.js';

/** Read-only system paths an action may use (its toolchain); missing ones are skipped. */
const SYSTEM_PATHS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/opt'];

/**
 * The parts of /etc a toolchain reads (compiler alternatives, the dynamic linker's cache, user and
 * time-zone names). The rest of /etc, where a node's own credentials usually live, stays hidden.
 */
const ETC_ENTRIES = [
  'alternatives', 'ld.so.cache', 'ld.so.conf', 'ld.so.conf.d', 'passwd', 'group', 'nsswitch.conf', 'localtime',
  'timezone', 'os-release', 'debian_version', 'locale.alias', 'locale.conf', 'default/locale', 'gcc', 'perl', 'python3',
  'python3.11', 'mime.types', 'magic', 'magic.mime', 'protocols', 'services',
];

export interface BwrapOptions {
  bwrapPath?: string;
  /** Extra read-only host paths (e.g. a toolchain outside /usr). */
  extraReadOnly?: string[];
}

/** Arguments that put `spec` in a bubblewrap sandbox: no network, own PID namespace, private /tmp. */
export function bwrapArgs(spec: RunSpec, opts: BwrapOptions = {}): string[] {
  const args: string[] = [];
  for (const p of [...SYSTEM_PATHS, ...(opts.extraReadOnly ?? [])]) {
    if (existsSync(p)) args.push('--ro-bind', p, p);
  }
  args.push('--dir', '/etc');
  for (const e of ETC_ENTRIES) {
    const p = `/etc/${e}`;
    if (existsSync(p)) args.push('--ro-bind', p, p);
  }
  args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
  if (spec.root) args.push('--bind', spec.root.hostDir, spec.root.sandboxDir);
  // An unprivileged uid inside the sandbox: inputs are read-only hard links into the
  // node's CAS, and root would ignore their 0444 mode.
  args.push('--unshare-all', '--uid', '65534', '--gid', '65534', '--die-with-parent', '--new-session', '--chdir', spec.cwd, '--');
  return [...args, ...spec.argv];
}

/** Decorates a runner so every command runs inside bubblewrap. */
export function createBwrapRunner(inner: ActionRunner, opts: BwrapOptions = {}): ActionRunner {
  const bwrap = opts.bwrapPath ?? 'bwrap';
  return {
    kind: 'bwrap',
    run(spec) {
      return inner.run({
        ...spec,
        argv: [bwrap, ...bwrapArgs(spec, opts)],
        // bwrap itself starts on the host; it changes into spec.cwd inside the sandbox.
        cwd: spec.root?.hostDir ?? spec.cwd,
        root: undefined,
      });
    },
  };
}

/** Whether bubblewrap can create its namespaces on this kernel. */
export async function probeBwrap(bwrapPath = 'bwrap'): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const r = await execa(bwrapPath, ['--ro-bind', '/', '/', '--unshare-all', '--die-with-parent', '--', 'true'], { reject: false, timeout: 10_000 });
    if (r.exitCode === 0) return { ok: true };
    return { ok: false, reason: String(r.stderr || r.shortMessage).trim() };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}
