/**
 * Groups the tokens of one shell command line into segments: the parts
 * separated at top level by `;`, `&&` or newlines. A segment is a pipeline or
 * `||` list of simple commands, which must run together; separate segments can
 * be looked at one by one.
 *
 * Lines with compound commands (`if`, `for`, `while`, `case`, subshells, brace
 * groups, functions), background jobs or here-documents are marked `compound`:
 * their segments do not run independently and callers must treat the line as
 * a whole.
 */
import { ShellSyntaxError, tokenizeShell, type ShellOperator, type ShellToken, type ShellWord } from './shell-tokenizer.js';

export interface ShellRedirect {
  op: ShellOperator['op'];
  fd?: number;
  target: ShellWord;
}

export interface SimpleCommand {
  /** Leading `NAME=value` words. */
  assignments: ShellWord[];
  /** The command name and its arguments. */
  words: ShellWord[];
  redirects: ShellRedirect[];
}

export interface CommandSegment {
  /** The simple commands of a pipeline or `||` list (one for a plain command). */
  commands: SimpleCommand[];
  /** Offsets of the segment in the source text. */
  start: number;
  end: number;
}

export interface ParsedCommandLine {
  text: string;
  segments: CommandSegment[];
  /** True when the line's segments cannot be taken apart (see the file comment). */
  compound: boolean;
}

const SEGMENT_SEPARATORS = new Set<string>([';', '&&', '\n', '(', ')']);
const COMMAND_SEPARATORS = new Set<string>(['|', '||']);
const REDIRECTIONS = new Set<string>(['<', '>', '>>', '>|', '<>', '<&', '>&']);
const COMPOUND_OPERATORS = new Set<string>(['(', ')', '&', ';;', '<<', '<<-']);
const RESERVED_WORDS = new Set([
  'if', 'then', 'else', 'elif', 'fi', 'do', 'done', 'case', 'esac', 'while', 'until', 'for', 'in',
  '{', '}', '!', 'function', 'select', '[[', ']]',
]);
/** Reserved words after which the next word is again in command position. */
const COMMAND_INTRODUCERS = new Set(['if', 'then', 'else', 'elif', 'do', 'while', 'until', '{', '!']);

const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;

/** Parses `text`; throws ShellSyntaxError when it is not a complete command line. */
export function parseCommandLine(text: string): ParsedCommandLine {
  const tokens = tokenizeShell(text);
  const segments: CommandSegment[] = [];
  let compound = false;
  let commands: SimpleCommand[] = [];
  let current: SimpleCommand | undefined;
  let segmentStart = -1;
  let segmentEnd = -1;

  const touch = (token: ShellToken) => {
    if (segmentStart < 0) segmentStart = token.start;
    segmentEnd = token.end;
  };
  const endCommand = () => {
    if (current) commands.push(current);
    current = undefined;
  };
  const endSegment = () => {
    endCommand();
    if (commands.length > 0) segments.push({ commands, start: segmentStart, end: segmentEnd });
    commands = [];
    segmentStart = -1;
  };

  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token.type === 'operator') {
      if (COMPOUND_OPERATORS.has(token.op)) compound = true;
      if (REDIRECTIONS.has(token.op) || token.op === '<<' || token.op === '<<-') {
        const target = tokens[i + 1];
        if (!target || target.type !== 'word') throw new ShellSyntaxError(`redirection ${token.op} without a target`, token.start);
        current ??= { assignments: [], words: [], redirects: [] };
        current.redirects.push({ op: token.op, fd: token.fd, target });
        touch(token);
        touch(target);
        i++;
      } else if (COMMAND_SEPARATORS.has(token.op)) {
        touch(token);
        endCommand();
      } else if (SEGMENT_SEPARATORS.has(token.op) || token.op === '&' || token.op === ';;') {
        endSegment();
      }
      continue;
    }
    current ??= { assignments: [], words: [], redirects: [] };
    const raw = text.slice(token.start, token.end);
    if (current.words.length === 0 && ASSIGNMENT.test(raw)) {
      current.assignments.push(token);
    } else {
      if (current.words.length === 0 && RESERVED_WORDS.has(raw)) compound = true;
      current.words.push(token);
    }
    touch(token);
  }
  endSegment();
  return { text, segments, compound };
}

/**
 * The word of `command` that the shell runs as the command: the first word, or
 * in compound lines the word after reserved words such as `do` or `then` (so
 * `for d in a b; do make -C $d; done` has `make` as the name of its second
 * simple command). Undefined for assignments-only commands and reserved words.
 */
export function commandName(command: SimpleCommand): ShellWord | undefined {
  let k = 0;
  while (k < command.words.length && COMMAND_INTRODUCERS.has(command.words[k].value)) k++;
  const word = command.words[k];
  return word && !RESERVED_WORDS.has(word.value) ? word : undefined;
}
