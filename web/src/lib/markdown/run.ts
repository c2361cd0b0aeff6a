/**
 * "Run" on a Python block and "Preview" on an HTML block of an answer.
 *
 * Python runs on the server, in the python tool's sandbox (POST /api/run); its output shows
 * under the block: stdout, stderr, exit status, the images it wrote inline (data: URLs), its
 * other files as downloads. "Edit" opens the code in a textarea; Run then runs what is there.
 * HTML is stored for its owner (POST /api/previews) and framed from its own route, under a
 * policy that sandboxes it into an opaque origin: its scripts run, but reach neither the
 * page's cookies nor the API. Everything the server returns goes in as text, never as HTML.
 */
import { api, ApiError } from '../api/client';
import type { PreviewCreated, RunFile, RunResult } from '../api/types';

const PYTHON = new Set(['python', 'py', 'python3']);
const HTML = new Set(['html', 'htm']);
// Shown inline; anything else (SVG included) is a download.
const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = Object.assign(document.createElement(tag), props);
  el.append(...children);
  return el;
}

function headButton(head: Element, label: string, onClick: () => void): HTMLButtonElement {
  const button = element('button', { type: 'button', className: 'run-code', textContent: label });
  button.addEventListener('click', onClick);
  const copy = head.querySelector('.copy-code');
  if (copy) copy.before(button);
  else head.append(button);
  return button;
}

/** The panel under a block where its output goes (made on first use). */
function outputPanel(block: HTMLElement, label: string): HTMLElement {
  let panel = block.querySelector<HTMLElement>(':scope > .run-output');
  if (!panel) {
    panel = element('div', { className: 'run-output' });
    panel.setAttribute('role', 'region');
    panel.setAttribute('aria-label', label);
    panel.setAttribute('aria-live', 'polite');
    block.append(panel);
  }
  return panel;
}

function section(title: string, text: string, className: string): HTMLElement {
  return element(
    'div',
    { className },
    element('div', { className: 'run-label', textContent: title }),
    element('pre', { textContent: text }),
  );
}

function fileView(file: RunFile): HTMLElement {
  const url = `data:${file.content_type};base64,${file.data_base64}`;
  if (INLINE_IMAGES.has(file.content_type)) {
    return element('figure', { className: 'run-file' }, element('img', { src: url, alt: file.name }), element('figcaption', { textContent: file.name }));
  }
  const link = element('a', { href: url, download: file.name, textContent: `${file.name} (${file.size.toLocaleString()} bytes)` });
  return element('div', { className: 'run-file' }, link);
}

export function showResult(panel: HTMLElement, result: RunResult): void {
  const parts: HTMLElement[] = [];
  if (result.stdout) parts.push(section('Output', result.stdout, 'run-stdout'));
  if (result.stderr) parts.push(section('Errors', result.stderr, 'run-stderr'));
  parts.push(...result.files.map(fileView));
  const ok = result.exit_status === 0;
  const status = element('div', { className: ok ? 'run-status' : 'run-status run-failed', textContent: `Exit status: ${result.exit_status}` });
  parts.push(status);
  panel.replaceChildren(...parts);
}

function showError(panel: HTMLElement, e: unknown): void {
  const message = e instanceof ApiError ? e.message : 'The code could not be run.';
  panel.replaceChildren(element('div', { className: 'run-status run-failed', textContent: message }));
}

function addRun(block: HTMLElement, head: Element, code: HTMLElement): void {
  let editor: HTMLTextAreaElement | undefined;
  let running = false;
  const run = headButton(head, 'Run', () => void go());
  const edit = headButton(head, 'Edit', () => {
    if (!editor) {
      editor = element('textarea', { className: 'run-editor', value: code.textContent ?? '', spellcheck: false });
      editor.setAttribute('aria-label', 'Code to run');
      editor.rows = Math.min(20, Math.max(4, editor.value.split('\n').length + 1));
      block.querySelector('pre')?.after(editor);
      edit.textContent = 'Close editor';
      editor.focus();
    } else {
      editor.remove();
      editor = undefined;
      edit.textContent = 'Edit';
    }
  });

  async function go(): Promise<void> {
    if (running) return;
    running = true;
    run.disabled = true;
    const panel = outputPanel(block, 'Run output');
    panel.replaceChildren(element('div', { className: 'run-status', textContent: 'Running…' }));
    try {
      const source = editor?.value ?? code.textContent ?? '';
      showResult(panel, await api.post<RunResult>('/api/run', { language: 'python', code: source }));
    } catch (e) {
      showError(panel, e);
    } finally {
      running = false;
      run.disabled = false;
      run.textContent = 'Re-run';
    }
  }
}

function addPreview(block: HTMLElement, head: Element, code: HTMLElement): void {
  const button = headButton(head, 'Preview', () => void show());
  async function show(): Promise<void> {
    button.disabled = true;
    const panel = outputPanel(block, 'HTML preview');
    try {
      const made = await api.post<PreviewCreated>('/api/previews', { html: code.textContent ?? '' });
      const frame = element('iframe', { src: made.url, title: 'HTML preview', className: 'run-preview' });
      // Scripts only: no same origin (so no cookies, storage or API), no forms, no popups.
      frame.setAttribute('sandbox', 'allow-scripts');
      frame.setAttribute('referrerpolicy', 'no-referrer');
      panel.replaceChildren(frame);
    } catch (e) {
      showError(panel, e);
    } finally {
      button.disabled = false;
      button.textContent = 'Refresh preview';
    }
  }
}

/** Run, Edit and Preview buttons on a rendered code block (idempotent). */
export function addRunControls(block: HTMLElement): void {
  const head = block.querySelector('.code-head');
  const code = block.querySelector<HTMLElement>('code[data-lang]');
  if (!head || !code || block.dataset['runnable']) return;
  const lang = code.dataset['lang'] ?? '';
  if (PYTHON.has(lang)) addRun(block, head, code);
  else if (HTML.has(lang)) addPreview(block, head, code);
  else return;
  block.dataset['runnable'] = '1';
}
