/**
 * An action's key names the compiler the client resolved (TOOL_PROPERTY: its path and the
 * SHA-256 of its binary). A node runs whatever its own PATH finds under that name: when
 * that is another binary (another gcc version, a wrapper), its output would be cached under
 * a key that names the client's compiler. The node checks first and refuses such an action
 * with a FAILED_PRECONDITION naming both binaries; the head then gives it to another node.
 */
import path from 'node:path';
import { Code, OrionError } from '../common/errors.js';
import type { ResolvedTool, ToolResolver } from '../common/tool-resolver.js';

export interface ToolCheckSpec {
  /** The action's TOOL_PROPERTY value: `PATH@SHA256` (or `NAME@missing`). */
  expected: string;
  /** argv[0] as the node will run it, the working directory the command sees, and its PATH. */
  argv0: string;
  cwd: string;
  pathEnv: string;
  /** The project's path (MOUNT_PATH_PROPERTY): a tool inside it is one of the action's inputs, keyed as such. */
  mountPath?: string;
}

export interface ToolCheck {
  /**
   * Resolves when the node can run the binary the key names: with `pathFirst`, a directory to put
   * first in the action's PATH so that argv[0] finds it (the client's own path, where this node has
   * the same binary and its PATH would find another, as with a ccache masquerade directory). Throws
   * an OrionError with `toolchain` set when it cannot.
   */
  verify(spec: ToolCheckSpec): Promise<{ pathFirst?: string }>;
}

const short = (hash: string) => hash.slice(0, 12);
/** A binary's digest, or for a compiler driver the hash of it and the programs it runs (tool-resolver.ts). */
const identityOf = (t: ResolvedTool) => (t.identity === t.digest.hash ? `sha256 ${short(t.identity)}` : `sha256 ${short(t.digest.hash)}, with its cc1, as and ld: ${short(t.identity)}`);

export function createToolCheck(tools: ToolResolver, nodeId: string): ToolCheck {
  return {
    async verify({ expected, argv0, cwd, pathEnv, mountPath }) {
      const at = expected.lastIndexOf('@');
      const clientPath = at > 0 ? expected.slice(0, at) : expected;
      const hash = at > 0 ? expected.slice(at + 1) : '';
      // The client found no such program: it could not have run it either; nothing to compare.
      if (!/^[0-9a-f]{64}$/.test(hash)) return {};
      const inProject = (p: string) => mountPath !== undefined && (p === mountPath || p.startsWith(`${mountPath}/`));
      if (inProject(clientPath) || (argv0.includes('/') && inProject(path.resolve(cwd, argv0)))) return {};
      const mine = await tools.resolve(argv0, cwd, pathEnv);
      if (mine?.identity === hash) return {};
      // The same binary at the client's own path here: found first there.
      if (!argv0.includes('/') && path.isAbsolute(clientPath) && path.basename(clientPath) === argv0) {
        const theirs = await tools.resolve(argv0, cwd, path.dirname(clientPath));
        if (theirs?.identity === hash) return { pathFirst: path.dirname(clientPath) };
      }
      if (!mine) {
        throw new OrionError(Code.FAILED_PRECONDITION, `node ${nodeId} has no ${argv0} on the action's PATH (${pathEnv}); the client's is ${clientPath} (sha256 ${short(hash)})`, { toolchain: clientPath });
      }
      throw new OrionError(
        Code.FAILED_PRECONDITION,
        `node ${nodeId} runs ${argv0} as ${mine.path} (${identityOf(mine)}), not the client's ${clientPath} (sha256 ${short(hash)}): another compiler would be cached under the client's key`,
        { toolchain: clientPath, hint: 'install the toolchain the clients use on this node, or give the nodes that have it the work' },
      );
    },
  };
}
