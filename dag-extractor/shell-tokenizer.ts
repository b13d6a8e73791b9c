/**
 * A POSIX `sh` tokenizer for the command lines a build prints: words with quote
 * removal (single quotes, double quotes, backslash escapes, backslash-newline
 * continuations), comments, and the control and redirection operators.
 *
 * It does not expand anything. A word that the shell would change (parameter
 * expansion, command substitution, arithmetic, globbing, tilde) is marked
 * `literal: false`; its `value` is then only the source text with quotes
 * removed and must not be used as an argument.
 */

export type ShellOperatorText =
  | '&&' | '||' | ';;' | ';' | '&' | '|' | '(' | ')' | '\n'
  | '<<-' | '<<' | '<>' | '<&' | '<' | '>>' | '>&' | '>|' | '>';

export interface ShellWord {
  type: 'word';
  /** The word after quote removal: what the command receives when `literal` is true. */
  value: string;
  /** Offsets of the word in the source text (`text.slice(start, end)` is the raw word). */
  start: number;
  end: number;
  /** True when the shell passes `value` unchanged (no expansion of any kind). */
  literal: boolean;
  /** True when the word runs a command substitution (`$(...)` or backquotes). */
  substitutes: boolean;
}

export interface ShellOperator {
  type: 'operator';
  op: ShellOperatorText;
  /** File descriptor written before a redirection operator, as in `2>file`. */
  fd?: number;
  start: number;
  end: number;
}

export type ShellToken = ShellWord | ShellOperator;

/** The text is not a complete shell command (an open quote or substitution, a trailing backslash). */
export class ShellSyntaxError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = 'ShellSyntaxError';
  }
}

// Longest first, so that `&&` wins over `&` and `<<-` over `<<`.
const OPERATORS: readonly ShellOperatorText[] = [
  '<<-', '&&', '||', ';;', '<<', '<>', '<&', '>>', '>&', '>|', ';', '&', '|', '(', ')', '<', '>', '\n',
];
const WORD_BREAK = new Set([' ', '\t', '\n', ';', '&', '|', '(', ')', '<', '>']);
const SPECIAL_PARAMETERS = new Set(['@', '*', '#', '?', '$', '!', '-']);
const GLOB_CHARS = new Set(['*', '?', '[']);
// Characters a backslash escapes inside double quotes (plus newline, handled separately).
const DQUOTE_ESCAPABLE = new Set(['$', '`', '"', '\\']);

export function tokenizeShell(text: string): ShellToken[] {
  const tokens: ShellToken[] = [];
  let pendingFd: number | undefined;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\t') {
      i++;
      continue;
    }
    if (c === '\\' && text[i + 1] === '\n') {
      i += 2;
      continue;
    }
    if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
      continue;
    }
    const op = OPERATORS.find((o) => text.startsWith(o, i));
    if (op) {
      const token: ShellOperator = { type: 'operator', op, start: i, end: i + op.length };
      if (pendingFd !== undefined) {
        token.fd = pendingFd;
        pendingFd = undefined;
      }
      tokens.push(token);
      i += op.length;
      continue;
    }
    const word = readWord(text, i);
    i = word.end;
    const raw = text.slice(word.start, word.end);
    if (/^\d+$/.test(raw) && (text[i] === '<' || text[i] === '>')) {
      pendingFd = Number(raw);
      continue;
    }
    tokens.push(word);
  }
  return tokens;
}

function readWord(text: string, start: number): ShellWord {
  let value = '';
  let literal = true;
  let substitutes = false;
  let i = start;
  while (i < text.length) {
    const c = text[i];
    if (WORD_BREAK.has(c)) break;
    if (c === '\\') {
      if (i + 1 >= text.length) throw new ShellSyntaxError('trailing backslash', i);
      if (text[i + 1] !== '\n') value += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "'") {
      const close = text.indexOf("'", i + 1);
      if (close < 0) throw new ShellSyntaxError('unterminated single quote', i);
      value += text.slice(i + 1, close);
      i = close + 1;
      continue;
    }
    if (c === '"') {
      const quoted = readDoubleQuoted(text, i);
      value += quoted.value;
      literal &&= quoted.literal;
      substitutes ||= quoted.substitutes;
      i = quoted.end;
      continue;
    }
    if (c === '$' || c === '`') {
      const expansion = readExpansion(text, i);
      if (expansion) {
        value += text.slice(i, expansion.end);
        literal = false;
        substitutes ||= expansion.substitutes;
        i = expansion.end;
        continue;
      }
    }
    if (GLOB_CHARS.has(c) || (c === '~' && i === start)) literal = false;
    value += c;
    i++;
  }
  return { type: 'word', value, start, end: i, literal, substitutes };
}

function readDoubleQuoted(text: string, open: number): { value: string; end: number; literal: boolean; substitutes: boolean } {
  let value = '';
  let literal = true;
  let substitutes = false;
  let i = open + 1;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') return { value, end: i + 1, literal, substitutes };
    if (c === '\\' && i + 1 < text.length) {
      const next = text[i + 1];
      if (next === '\n') {
        i += 2;
      } else if (DQUOTE_ESCAPABLE.has(next)) {
        value += next;
        i += 2;
      } else {
        value += c;
        i++;
      }
      continue;
    }
    if (c === '$' || c === '`') {
      const expansion = readExpansion(text, i);
      if (expansion) {
        value += text.slice(i, expansion.end);
        literal = false;
        substitutes ||= expansion.substitutes;
        i = expansion.end;
        continue;
      }
    }
    value += c;
    i++;
  }
  throw new ShellSyntaxError('unterminated double quote', open);
}

/**
 * Reads the expansion starting at `text[i]` (`$name`, `${...}`, `$(...)`,
 * `$((...))` or a backquoted command). Returns undefined when the `$` is
 * literal, as in `cost: $ 5` or a trailing `$`.
 */
function readExpansion(text: string, i: number): { end: number; substitutes: boolean } | undefined {
  if (text[i] === '`') {
    let j = i + 1;
    while (j < text.length && text[j] !== '`') j += text[j] === '\\' ? 2 : 1;
    if (j >= text.length) throw new ShellSyntaxError('unterminated backquote', i);
    return { end: j + 1, substitutes: true };
  }
  const next = text[i + 1];
  if (next === '(') {
    const arithmetic = text[i + 2] === '(';
    return { end: skipBalanced(text, i + 1, '(', ')'), substitutes: !arithmetic };
  }
  if (next === '{') return { end: skipBalanced(text, i + 1, '{', '}'), substitutes: false };
  if (next !== undefined && /[A-Za-z_]/.test(next)) {
    let j = i + 2;
    while (j < text.length && /[A-Za-z0-9_]/.test(text[j])) j++;
    return { end: j, substitutes: false };
  }
  if (next !== undefined && (/[0-9]/.test(next) || SPECIAL_PARAMETERS.has(next))) return { end: i + 2, substitutes: false };
  return undefined;
}

/** Returns the offset just past the bracket matching the one at `open`, skipping quoted text. */
function skipBalanced(text: string, open: number, opening: string, closing: string): number {
  let depth = 0;
  let i = open;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\') {
      i += 2;
      continue;
    }
    if (c === "'") {
      const close = text.indexOf("'", i + 1);
      if (close < 0) break;
      i = close + 1;
      continue;
    }
    if (c === '"') {
      i = readDoubleQuoted(text, i).end;
      continue;
    }
    if (c === opening) depth++;
    else if (c === closing && --depth === 0) return i + 1;
    i++;
  }
  throw new ShellSyntaxError(`unterminated ${opening}`, open);
}
