/**
 * What runs on a rendered block once it is in the page: syntax highlighting, math, copy
 * buttons, and Run / Preview on Python and HTML blocks (./run.ts). The highlighter's core, each of its languages and KaTeX load only when a block
 * needs them, so the first load carries none of them.
 */
import type { HLJSApi, LanguageFn } from 'highlight.js';
import { addRunControls } from './run';

// One lazy chunk per language (the package also ships *.js.js duplicates: skipped).
const languages = import.meta.glob<{ default: LanguageFn }>([
  '/node_modules/highlight.js/es/languages/*.js',
  '!/node_modules/highlight.js/es/languages/*.js.js',
]);
const ALIASES: Record<string, string> = {
  js: 'javascript', ts: 'typescript', py: 'python', sh: 'bash', shell: 'bash', zsh: 'bash',
  yml: 'yaml', html: 'xml', md: 'markdown', rs: 'rust', 'c++': 'cpp', golang: 'go', kt: 'kotlin',
};

let hljs: Promise<HLJSApi> | undefined;
const loaded = new Map<string, Promise<boolean>>();

function core(): Promise<HLJSApi> {
  hljs ??= import('highlight.js/lib/core').then((m) => m.default);
  return hljs;
}

function loadLanguage(api: HLJSApi, name: string): Promise<boolean> {
  const lang = ALIASES[name] ?? name;
  let done = loaded.get(lang);
  if (!done) {
    const load = languages[`/node_modules/highlight.js/es/languages/${lang}.js`];
    done = load
      ? load().then((m) => (api.registerLanguage(lang, m.default), true)).catch(() => false)
      : Promise.resolve(false);
    loaded.set(lang, done);
  }
  return done;
}

async function highlight(code: HTMLElement): Promise<void> {
  const lang = code.dataset['lang'];
  if (!lang || code.dataset['highlighted']) return;
  const api = await core();
  if (!(await loadLanguage(api, lang))) return;
  // highlight.js escapes the text it is given; its output is spans with hljs-* classes only.
  code.innerHTML = api.highlight(code.textContent ?? '', { language: ALIASES[lang] ?? lang }).value;
  code.dataset['highlighted'] = '1';
}

async function renderMath(el: HTMLElement): Promise<void> {
  const tex = el.dataset['tex'];
  if (tex === undefined || el.dataset['rendered']) return;
  const katex = (await import('./katex')).default;
  // trust: false refuses \href, \url with javascript: and friends; errors show in the theme's
  // red (KaTeX's own #cc0000 fails WCAG AA contrast on the dark background).
  katex.render(tex, el, { displayMode: el.dataset['display'] === '1', throwOnError: false, errorColor: 'var(--danger)', trust: false, strict: 'ignore' });
  el.dataset['rendered'] = '1';
}

function addCopyButton(block: HTMLElement): void {
  const head = block.querySelector('.code-head');
  if (!head || head.querySelector('button')) return;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'copy-code';
  button.textContent = 'Copy';
  button.setAttribute('aria-label', 'Copy code');
  button.addEventListener('click', () => {
    const text = block.querySelector('code')?.textContent ?? '';
    void navigator.clipboard?.writeText(text).then(() => {
      button.textContent = 'Copied';
      setTimeout(() => (button.textContent = 'Copy'), 1500);
    });
  });
  head.append(button);
}

/** Enhance a finished block (idempotent). */
export function enhance(root: HTMLElement): void {
  root.querySelectorAll<HTMLElement>('.code-block').forEach((block) => {
    addCopyButton(block);
    addRunControls(block);
  });
  // A long line scrolls sideways; keyboard users must be able to reach it. Set on every pass:
  // a block re-rendered after its first enhancement keeps its button but not this attribute.
  root.querySelectorAll<HTMLElement>('.code-block pre, .run-output pre').forEach((pre) => {
    if (!pre.hasAttribute('tabindex')) pre.setAttribute('tabindex', '0');
  });
  root.querySelectorAll<HTMLElement>('code[data-lang]').forEach((c) => void highlight(c));
  root.querySelectorAll<HTMLElement>('.math').forEach((m) => void renderMath(m));
}
