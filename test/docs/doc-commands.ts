/**
 * The shell commands a Markdown document shows a reader: every line of a ```sh block, and the indented
 * lines under "Try:" in the README's example of the demo's start-up banner (an unlabelled block).
 */
export interface DocCommand {
  file: string;
  /** a ```sh block, or the demo banner example's "Try:" lines */
  source: 'sh' | 'banner';
  /** 1-based line of the command's first line */
  line: number;
  /** the command as a reader copies it: continuation lines joined, the trailing comment cut, spaces collapsed */
  text: string;
  /** the words the shell would pass to the program; operators (`&&`, `&`, `|`, `;`) appear as words of their own */
  words: string[];
  /** anything the shell would expand or treat as syntax: an operator, `$`, a backtick, a glob, a redirection */
  shellSyntax: boolean;
  /** the trailing `# …` comment, often the expected result */
  comment: string;
}

const BANNER_START = 'stockwire demo is running';

/** Splits one logical command line into words, as POSIX sh quoting does; what sh would expand is flagged, never expanded. */
export function shellWords(line: string): {
  words: string[];
  shellSyntax: boolean;
  comment: string;
  commentAt: number;
} {
  const words: string[] = [];
  let word: string | null = null;
  let shellSyntax = false;
  let i = 0;
  const push = () => {
    if (word !== null) words.push(word);
    word = null;
  };
  while (i < line.length) {
    const ch = line[i] as string;
    if (ch === ' ' || ch === '\t') {
      push();
      i++;
    } else if (ch === '#' && word === null) {
      return { words, shellSyntax, comment: line.slice(i + 1).trim(), commentAt: i };
    } else if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated ' in: ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end + 1;
    } else if (ch === '"') {
      let j = i + 1;
      let s = '';
      for (; j < line.length && line[j] !== '"'; j++) {
        if (line[j] === '$' || line[j] === '`') shellSyntax = true;
        if (line[j] === '\\' && '"\\$`'.includes(line[j + 1] ?? '')) j++;
        s += line[j];
      }
      if (j >= line.length) throw new Error(`unterminated " in: ${line}`);
      word = (word ?? '') + s;
      i = j + 1;
    } else if (ch === '\\') {
      word = (word ?? '') + (line[i + 1] ?? '');
      i += 2;
    } else if ('&|;<>'.includes(ch)) {
      push();
      const op = line.slice(i).match(/^(&&|\|\||&|\||;|>>|>|<)/)?.[0] as string;
      words.push(op);
      shellSyntax = true;
      i += op.length;
    } else {
      if ('$`*?[~'.includes(ch)) shellSyntax = true;
      word = (word ?? '') + ch;
      i++;
    }
  }
  push();
  return { words, shellSyntax, comment: '', commentAt: line.length };
}

/** Joins `\`-continued lines into logical lines, each with the number of its first line. */
function logicalLines(lines: { n: number; s: string }[]): { n: number; s: string }[] {
  const out: { n: number; s: string }[] = [];
  let open: { n: number; s: string } | null = null;
  for (const { n, s } of lines) {
    const cont = /\\\s*$/.test(s);
    const body = cont ? s.replace(/\\\s*$/, '') : s;
    if (open) open.s += ` ${body.trim()}`;
    else open = { n, s: body };
    if (!cont) {
      out.push(open);
      open = null;
    }
  }
  if (open) throw new Error(`line ${open.n}: a continuation (\\) with no next line`);
  return out;
}

function command(file: string, source: DocCommand['source'], n: number, s: string): DocCommand {
  const { words, shellSyntax, comment, commentAt } = shellWords(s.trim());
  const text = s.trim().slice(0, commentAt).trim().replace(/\s+/g, ' ');
  return { file, source, line: n, text, words, shellSyntax, comment };
}

/**
 * Every command of one Markdown document. Shell blocks must be fenced as ```sh: a ```bash, ```shell or
 * ```console block is an error here, so no command escapes the docs test by the name of its fence.
 */
export function extractCommands(file: string, markdown: string): DocCommand[] {
  const lines = markdown.split('\n');
  const out: DocCommand[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = lines[i]?.match(/^```(\S*)\s*$/);
    if (!open) continue;
    const info = open[1] as string;
    const body: { n: number; s: string }[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^```\s*$/.test(lines[j] as string); j++)
      body.push({ n: j + 1, s: lines[j] as string });
    if (j >= lines.length) throw new Error(`${file}:${i + 1}: a fence that never closes`);
    if (['bash', 'shell', 'console', 'shell-session', 'zsh'].includes(info))
      throw new Error(`${file}:${i + 1}: fence commands as \`\`\`sh (the docs test reads those), not \`\`\`${info}`);
    if (info === 'sh') {
      for (const { n, s } of logicalLines(body.filter((l) => l.s.trim() !== '' && !l.s.trim().startsWith('#'))))
        out.push(command(file, 'sh', n, s));
    } else if (info === '' && body[0]?.s.startsWith(BANNER_START)) {
      // After "Try:" every indented line is a command, except "…", which stands for lines left out.
      const tryAt = body.findIndex((l) => l.s.trim() === 'Try:');
      if (tryAt < 0) throw new Error(`${file}:${i + 1}: the demo banner example has no "Try:" section`);
      const shown = body.slice(tryAt + 1).filter((l) => l.s.trim() !== '' && l.s.trim() !== '…');
      for (const l of shown)
        if (!/^ {4}\S/.test(l.s) && !/^ {6}/.test(l.s))
          throw new Error(`${file}:${l.n}: not a command line of the banner's "Try:" section: ${l.s}`);
      for (const { n, s } of logicalLines(shown)) out.push(command(file, 'banner', n, s));
    }
    i = j;
  }
  return out;
}
