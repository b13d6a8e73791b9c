/**
 * A reader for Ninja build manifests (build.ninja and the files it includes),
 * following the Ninja manual: rules, build edges with explicit, implicit and
 * order-only inputs and implicit outputs, variables with their scoping rules,
 * `include` / `subninja`, `default`, and `$` escapes and line continuations.
 *
 * Commands are expanded as Ninja itself expands them: `$in`/`$out` are
 * shell-quoted, edge variables shadow rule variables, and a response file the
 * command reads (`@$rspfile`) is replaced by its content, as
 * `ninja -t compdb -x` does.
 */
import path from 'node:path';
import { failedPrecondition } from '../common/errors.js';

export interface NinjaEdge {
  rule: string;
  /** Explicit outputs first, then implicit ones; paths as Ninja canonicalises them (relative to Ninja's working directory unless absolute). */
  outputs: string[];
  explicitOutputCount: number;
  explicitInputs: string[];
  implicitInputs: string[];
  orderOnlyInputs: string[];
  validations: string[];
  /** The expanded command; empty for phony edges. */
  command: string;
  /** The rule is marked `generator` (it regenerates the manifest, like CMake's RERUN_CMAKE). */
  generator: boolean;
}

export interface NinjaManifest {
  edges: NinjaEdge[];
  /** Targets named by `default` statements. */
  defaults: string[];
}

/** Reads a manifest file; paths are relative to Ninja's working directory. */
export type ManifestFileReader = (file: string) => Promise<string>;

type EvalPart = { literal: string } | { variable: string };
type EvalString = EvalPart[];

interface Rule {
  name: string;
  bindings: Map<string, EvalString>;
}

class Scope {
  readonly variables = new Map<string, string>();
  readonly rules = new Map<string, Rule>();
  constructor(readonly parent?: Scope) {}

  lookup(name: string): string {
    return this.variables.get(name) ?? this.parent?.lookup(name) ?? '';
  }

  rule(name: string): Rule | undefined {
    return this.rules.get(name) ?? this.parent?.rule(name);
  }
}

/** The declaration that indented `name = value` lines belong to. */
interface Block {
  bind(key: string, value: EvalString): void;
  close(): void;
}

interface Line {
  text: string;
  indented: boolean;
  blank: boolean;
  file: string;
  lineNumber: number;
}

const PHONY: Rule = { name: 'phony', bindings: new Map() };
const VARIABLE_NAME = /^[A-Za-z0-9_.-]+/;
const SIMPLE_VARIABLE_NAME = /^[A-Za-z0-9_-]+/;

/** Parses the manifest `file` (relative to `cwd` or absolute) and everything it includes. */
export async function parseNinjaManifest(file: string, cwd: string, readFile: ManifestFileReader): Promise<NinjaManifest> {
  const manifest: NinjaManifest = { edges: [], defaults: [] };
  const root = new Scope();
  root.rules.set('phony', PHONY);
  await parseFile(file, root);
  return manifest;

  async function parseFile(name: string, scope: Scope): Promise<void> {
    const text = await readFile(path.resolve(cwd, name));
    let block: Block | undefined;
    const closeBlock = () => {
      block?.close();
      block = undefined;
    };

    for (const line of logicalLines(text, name)) {
      const fail = (message: string) => failedPrecondition(`${line.file}:${line.lineNumber}: ${message}`);
      if (line.blank) {
        closeBlock();
        continue;
      }
      if (line.indented) {
        if (!block) throw fail('unexpected indented line');
        const [key, value] = parseBinding(line.text, fail);
        block.bind(key, value);
        continue;
      }
      closeBlock();
      const keyword = /^(rule|build|default|pool|include|subninja)\s+/.exec(line.text);
      if (!keyword) {
        const [key, value] = parseBinding(line.text, fail);
        scope.variables.set(key, evaluate(value, (v) => scope.lookup(v)));
        continue;
      }
      const rest = line.text.slice(keyword[0].length);
      switch (keyword[1]) {
        case 'rule': {
          const name = rest.trim();
          if (!VARIABLE_NAME.test(name)) throw fail(`invalid rule name ${JSON.stringify(name)}`);
          const rule: Rule = { name, bindings: new Map() };
          if (scope.rules.has(name)) throw fail(`duplicate rule '${name}'`);
          scope.rules.set(name, rule);
          block = {
            bind: (key, value) => rule.bindings.set(key, value),
            close: () => {
              if (!rule.bindings.has('command')) throw fail(`rule '${name}' has no command`);
            },
          };
          break;
        }
        case 'pool':
          block = { bind: () => {}, close: () => {} };
          break;
        case 'default':
          for (const target of parsePathList(rest, fail).paths) {
            manifest.defaults.push(canonicalPath(evaluate(target, (v) => scope.lookup(v))));
          }
          break;
        case 'include':
        case 'subninja': {
          const target = evaluate(readEvalString(rest.trim(), 0, false, fail).value, (v) => scope.lookup(v));
          await parseFile(target, keyword[1] === 'include' ? scope : new Scope(scope));
          break;
        }
        case 'build': {
          const declaration = parseBuildLine(rest, fail);
          const edgeBindings = new Map<string, string>();
          block = {
            // Edge variables are evaluated in the enclosing scope as they are read.
            bind: (key, value) => edgeBindings.set(key, evaluate(value, (v) => scope.lookup(v))),
            close: () => manifest.edges.push(makeEdge(declaration, edgeBindings, scope, fail)),
          };
          break;
        }
      }
    }
    closeBlock();
  }
}

interface BuildDeclaration {
  outputs: EvalString[];
  implicitOutputs: EvalString[];
  rule: string;
  explicitInputs: EvalString[];
  implicitInputs: EvalString[];
  orderOnlyInputs: EvalString[];
  validations: EvalString[];
}

function makeEdge(declaration: BuildDeclaration, bindings: Map<string, string>, scope: Scope, fail: (m: string) => Error): NinjaEdge {
  const rule = scope.rule(declaration.rule);
  if (!rule) throw fail(`unknown build rule '${declaration.rule}'`);
  // Paths see the edge's own variables, then the enclosing scope.
  const pathLookup = (name: string) => bindings.get(name) ?? scope.lookup(name);
  const paths = (list: EvalString[]) => list.map((p) => evaluate(p, pathLookup)).filter((p) => p !== '').map(canonicalPath);
  const outputs = paths(declaration.outputs);
  const explicitInputs = paths(declaration.explicitInputs);
  if (outputs.length === 0) throw fail('build statement has no outputs');

  // Ninja's edge environment: an edge without variables of its own uses the enclosing scope directly,
  // whose variables then shadow the rule's (LookupWithFallback in ninja's eval_env.cc).
  const own = bindings.size > 0 ? bindings : scope.variables;
  const parent = bindings.size > 0 ? scope : scope.parent;
  const variable = (name: string, escape: boolean, seen: readonly string[]): string => {
    const quote = escape ? shellEscape : (p: string) => p;
    if (name === 'in') return explicitInputs.map(quote).join(' ');
    if (name === 'in_newline') return explicitInputs.map(quote).join('\n');
    if (name === 'out') return outputs.map(quote).join(' ');
    const value = own.get(name);
    if (value !== undefined) return value;
    const binding = rule.bindings.get(name);
    if (binding) {
      if (seen.includes(name)) throw fail(`cycle in rule variables: ${[...seen, name].join(' -> ')}`);
      return evaluate(binding, (v) => variable(v, escape, [...seen, name]));
    }
    return parent?.lookup(name) ?? '';
  };

  let command = rule === PHONY ? '' : variable('command', true, []);
  const rspfile = variable('rspfile', false, []);
  if (rspfile !== '') {
    const at = command.indexOf(rspfile);
    if (at > 0 && command[at - 1] === '@') {
      const content = variable('rspfile_content', true, []).replace(/\n/g, ' ');
      command = command.slice(0, at - 1) + content + command.slice(at + rspfile.length);
    }
  }
  const implicitOutputs = paths(declaration.implicitOutputs);
  return {
    rule: rule.name,
    outputs: [...outputs, ...implicitOutputs],
    explicitOutputCount: outputs.length,
    explicitInputs,
    implicitInputs: paths(declaration.implicitInputs),
    orderOnlyInputs: paths(declaration.orderOnlyInputs),
    validations: paths(declaration.validations),
    command,
    generator: variable('generator', false, []) !== '',
  };
}

function parseBuildLine(text: string, fail: (m: string) => Error): BuildDeclaration {
  const colon = parsePathList(text, fail, true);
  if (colon.stop !== ':') throw fail('expected ":" in build statement');
  const outputs = colon.groups.get('') ?? [];
  const implicitOutputs = colon.groups.get('|') ?? [];
  let pos = colon.end + 1;
  while (text[pos] === ' ') pos++;
  const ruleMatch = VARIABLE_NAME.exec(text.slice(pos));
  if (!ruleMatch) throw fail('expected a rule name after ":"');
  const inputs = parsePathList(text.slice(pos + ruleMatch[0].length), fail);
  return {
    outputs,
    implicitOutputs,
    rule: ruleMatch[0],
    explicitInputs: inputs.groups.get('') ?? [],
    implicitInputs: inputs.groups.get('|') ?? [],
    orderOnlyInputs: inputs.groups.get('||') ?? [],
    validations: inputs.groups.get('|@') ?? [],
  };
}

/**
 * Reads space-separated paths grouped by the separators `|`, `||` and `|@`
 * (the group before any separator is ''). With `stopAtColon`, stops at an
 * unescaped ':' and reports it in `stop`.
 */
function parsePathList(
  text: string,
  fail: (m: string) => Error,
  stopAtColon = false,
): { paths: EvalString[]; groups: Map<string, EvalString[]>; end: number; stop?: string } {
  const groups = new Map<string, EvalString[]>();
  const paths: EvalString[] = [];
  let group = '';
  let pos = 0;
  while (pos < text.length) {
    const c = text[pos];
    if (c === ' ') {
      pos++;
      continue;
    }
    if (c === ':') {
      if (stopAtColon) return { paths, groups, end: pos, stop: ':' };
      throw fail('unexpected ":"');
    }
    if (c === '|') {
      group = text.startsWith('||', pos) ? '||' : text.startsWith('|@', pos) ? '|@' : '|';
      pos += group.length;
      continue;
    }
    const { value, end } = readEvalString(text, pos, true, fail);
    paths.push(value);
    const list = groups.get(group);
    if (list) list.push(value);
    else groups.set(group, [value]);
    pos = end;
  }
  return { paths, groups, end: pos };
}

function parseBinding(text: string, fail: (m: string) => Error): [string, EvalString] {
  const name = VARIABLE_NAME.exec(text);
  if (!name) throw fail(`expected a variable name in ${JSON.stringify(text)}`);
  let pos = name[0].length;
  while (text[pos] === ' ') pos++;
  if (text[pos] !== '=') throw fail(`expected "=" after ${name[0]}`);
  pos++;
  while (text[pos] === ' ') pos++;
  return [name[0], readEvalString(text, pos, false, fail).value];
}

/** Reads an evaluated string from `pos`; a path stops at an unescaped space, ':' or '|'. */
function readEvalString(text: string, pos: number, isPath: boolean, fail: (m: string) => Error): { value: EvalString; end: number } {
  const value: EvalString = [];
  let literal = '';
  const flush = () => {
    if (literal !== '') value.push({ literal });
    literal = '';
  };
  while (pos < text.length) {
    const c = text[pos];
    if (isPath && (c === ' ' || c === ':' || c === '|')) break;
    if (c !== '$') {
      literal += c;
      pos++;
      continue;
    }
    const next = text[pos + 1];
    if (next === '$' || next === ' ' || next === ':') {
      literal += next;
      pos += 2;
    } else if (next === '{') {
      const close = text.indexOf('}', pos + 2);
      const name = close < 0 ? '' : text.slice(pos + 2, close);
      if (!VARIABLE_NAME.test(name) || VARIABLE_NAME.exec(name)![0] !== name) throw fail('bad ${...} variable reference');
      flush();
      value.push({ variable: name });
      pos = close + 1;
    } else {
      const name = SIMPLE_VARIABLE_NAME.exec(text.slice(pos + 1));
      if (!name) throw fail(`bad $-escape (literal $ must be written as $$)`);
      flush();
      value.push({ variable: name[0] });
      pos += 1 + name[0].length;
    }
  }
  flush();
  return { value, end: pos };
}

function evaluate(value: EvalString, lookup: (name: string) => string): string {
  return value.map((part) => ('literal' in part ? part.literal : lookup(part.variable))).join('');
}

/**
 * Splits a manifest into logical lines: `$` at the end of a line continues it
 * (leading spaces of the next line are dropped), comment lines are skipped,
 * and blank lines are kept because they end a block of indented variables.
 */
function* logicalLines(text: string, file: string): Generator<Line> {
  const physical = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  for (let i = 0; i < physical.length; i++) {
    const lineNumber = i + 1;
    let line = physical[i];
    if (/^\s*#/.test(line)) continue;
    while (endsWithContinuation(line) && i + 1 < physical.length) {
      line = line.slice(0, -1) + physical[++i].replace(/^ +/, '');
    }
    const indented = /^ +/.test(line);
    const content = line.replace(/^ +/, '');
    yield { text: content, indented, blank: content === '', file, lineNumber };
  }
}

/** True when the line ends with a `$` that is not itself escaped (`$$`). */
function endsWithContinuation(line: string): boolean {
  let dollars = 0;
  for (let i = line.length - 1; i >= 0 && line[i] === '$'; i--) dollars++;
  return dollars % 2 === 1;
}

/** Ninja's path canonicalisation: `.` and `x/..` components and repeated slashes removed. */
function canonicalPath(p: string): string {
  const normal = path.posix.normalize(p);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

/** Ninja's POSIX quoting of paths in $in and $out. */
function shellEscape(p: string): string {
  if (/^[A-Za-z0-9_+\-./]*$/.test(p)) return p;
  return `'${p.replace(/'/g, `'\\''`)}'`;
}
