/**
 * An action before it has an id and dependencies: what one command line (or
 * one Ninja edge, or one compile_commands.json entry) turned into.
 */
import type { ActionKind } from './types.js';
import { displayPath } from './paths.js';

export interface ActionDraft {
  kind: ActionKind;
  /** Short verb for the label: CC, CXX, AS, AR, RANLIB, LD, INSTALL, CP, GEN or SH. */
  verb: string;
  cwd: string;
  argv: string[];
  env?: Record<string, string>;
  inputs: string[];
  /** Files read only if an earlier action produces them (e.g. a library found through -L/-l). */
  optionalInputs: string[];
  outputs: string[];
  cacheable: boolean;
  /** A make recipe line with `-`: its failure does not fail the build. */
  ignoreErrors?: boolean;
}

const MAX_COMMAND_LABEL = 60;

/**
 * A short human label: "CC lib/foo.o", "AR lib/libfoo.a", "LD app",
 * "GEN gen/version.h", or "SH mkdir -p gen" for a step with no known output.
 */
export function actionLabel(draft: Pick<ActionDraft, 'verb' | 'argv' | 'outputs'>, root: string): string {
  if (draft.outputs.length > 0) {
    const more = draft.outputs.length > 1 && draft.verb === 'GEN' ? ` (+${draft.outputs.length - 1} more)` : '';
    return `${draft.verb} ${displayPath(root, draft.outputs[0])}${more}`;
  }
  const command = (draft.argv[0] === '/bin/sh' && draft.argv[1] === '-c' ? draft.argv[2] : draft.argv.join(' '))
    .replace(/\\\n/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  const short = command.length > MAX_COMMAND_LABEL ? `${command.slice(0, MAX_COMMAND_LABEL - 3)}...` : command;
  return `${draft.verb} ${short}`;
}
