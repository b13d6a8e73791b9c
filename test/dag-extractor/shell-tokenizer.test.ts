import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { ShellSyntaxError, tokenizeShell, type ShellWord } from '../../dag-extractor/shell-tokenizer.js';
import { parseCommandLine } from '../../dag-extractor/shell-command-line.js';

/** The arguments `sh` passes for `text`, read back NUL-separated from printf. */
async function shWords(text: string): Promise<string[]> {
  const { stdout } = await execa('sh', ['-c', `printf '%s\\0' ${text}`], { stripFinalNewline: false });
  return stdout.split('\0').slice(0, -1);
}

function words(text: string): ShellWord[] {
  return tokenizeShell(text).filter((t): t is ShellWord => t.type === 'word');
}

describe('tokenizeShell', () => {
  const cases = [
    String.raw`-DVERSION="\"1.0\""`,
    String.raw`-DNAME=\"orion\" -DPATH="/usr/local/share"`,
    String.raw`'a b' "c d" e\ f`,
    String.raw`'it'"'"'s' "it's"`,
    String.raw`"a\\b" "a\b" 'a\b' a\\b "\$HOME" '$HOME' \$HOME`,
    String.raw`-DX='"str"' --flag="a;b" 'x|y' "&&" '>'`,
    String.raw`"" a""b '' "'"`,
    'abc\\\ndef "line1\\\nline2" \'keep\\\nnewline\'',
    String.raw`x#y "#z" # a comment`,
    String.raw`"tab	inside" 'star*' "q?" \*`,
  ];

  it.each(cases)('splits and unquotes exactly as sh does: %s', async (text) => {
    const ours = words(text);
    expect(ours.every((w) => w.literal)).toBe(true);
    expect(ours.map((w) => w.value)).toEqual(await shWords(text));
  });

  it('reads control and redirection operators, with the file descriptor of a redirection', () => {
    const tokens = tokenizeShell("printf 'x' 1>&2; cc -c a.c 2>/dev/null && ar rcs l.a a.o || true | cat >> log");
    const ops = tokens.flatMap((t) => (t.type === 'operator' ? [`${t.fd ?? ''}${t.op}`] : []));
    expect(ops).toEqual(['1>&', ';', '2>', '&&', '||', '|', '>>']);
  });

  it('marks words with expansions, substitutions, globs or a tilde as not literal', () => {
    const [home, sub, glob, tilde, arith, quotedVar, plain] = words('$HOME $(pwd -P) *.o ~/x $((1+2)) "v=${V}" plain');
    expect([home, sub, glob, tilde, arith, quotedVar].map((w) => w.literal)).toEqual([false, false, false, false, false, false]);
    expect(sub.substitutes).toBe(true);
    expect(home.substitutes).toBe(false);
    expect(plain.literal).toBe(true);
  });

  it('keeps a command substitution with spaces and parentheses as one word', () => {
    const ws = words('cc $(pkg-config --cflags "a b" | sed "s/(x)/y/") -c x.c');
    expect(ws.map((w) => w.value)).toEqual(['cc', '$(pkg-config --cflags "a b" | sed "s/(x)/y/")', '-c', 'x.c']);
  });

  it('rejects an unterminated quote and a trailing backslash', () => {
    expect(() => tokenizeShell("echo 'open")).toThrow(ShellSyntaxError);
    expect(() => tokenizeShell('echo "open')).toThrow(ShellSyntaxError);
    expect(() => tokenizeShell('echo open\\')).toThrow(ShellSyntaxError);
  });
});

describe('parseCommandLine', () => {
  it('splits at top-level ;, && and newlines but keeps pipelines and || lists together', () => {
    const parsed = parseCommandLine('a 1; b 2 && c | d\ne || f');
    expect(parsed.compound).toBe(false);
    expect(parsed.segments.map((s) => s.commands.map((c) => c.words.map((w) => w.value).join(' ')))).toEqual([
      ['a 1'],
      ['b 2'],
      ['c', 'd'],
      ['e', 'f'],
    ]);
  });

  it('separates leading assignments and redirections from the command words', () => {
    const [segment] = parseCommandLine('CCACHE_DISABLE=1 cc -c a.c > log 2>&1').segments;
    const [command] = segment.commands;
    expect(command.assignments.map((w) => w.value)).toEqual(['CCACHE_DISABLE=1']);
    expect(command.words.map((w) => w.value)).toEqual(['cc', '-c', 'a.c']);
    expect(command.redirects.map((r) => [r.fd, r.op, r.target.value])).toEqual([[undefined, '>', 'log'], [2, '>&', '1']]);
  });

  it.each([
    'for d in a b; do make -C $d; done',
    'if test -f x; then cp x y; fi',
    '(cd sub && make)',
    '{ echo a; echo b; } > out',
    'sleep 1 &',
    'cat <<EOF\nx\nEOF',
  ])('marks compound commands, background jobs and here-documents as compound: %s', (line) => {
    expect(parseCommandLine(line).compound).toBe(true);
  });

  it('does not mark reserved words used as arguments as compound', () => {
    expect(parseCommandLine('echo if then done').compound).toBe(false);
  });
});
