/** Payloads that would run if anything in the page let HTML or URLs through. */
import type { Page } from '@playwright/test';

export const CORPUS = [
  '<script>__xss("script")</script>',
  '<img src=x onerror="__xss(\'img\')">',
  '<svg onload="__xss(\'svg\')"><circle r="1"/></svg>',
  '<svg><script>__xss("svg-script")</script></svg>',
  '[js link](javascript:__xss("jslink"))',
  '[JS link](JaVaScRiPt:__xss("jslink2"))',
  '[data link](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX194c3MoJ2RhdGEnKTwvc2NyaXB0Pg==)',
  '[titled](https://example.com "x\\" onmouseover=\\"__xss(\'title\')")',
  '<a href="javascript:__xss(\'raw-a\')">raw a</a>',
  '![pic](javascript:__xss("image"))',
  '<details open ontoggle="__xss(\'details\')">x</details>',
  '<iframe srcdoc="<script>parent.__xss(\'iframe\')</script>"></iframe>',
  '<math><mtext><table><mglyph><style><img src=x onerror="__xss(\'mxss\')">',
  '`<img src=x onerror=__xss("inline-code")>`',
  '```html\n<script>__xss("fenced")</script><img src=x onerror=__xss("fenced-img")>\n```',
  '```javascript\n</code></pre><img src=x onerror=__xss("break-out")>\n```',
  '$\\href{javascript:__xss("katex-href")}{click}$',
  '$$\\url{javascript:__xss("katex-url")}$$',
  '$<img src=x onerror=__xss("katex-html")>$',
  '$\\htmlId{x}{y}\\htmlData{onclick=__xss("katex-data")}{z}$',
  '<style>body{background:url("javascript:__xss(\'css\')")}</style>',
  '<form action="javascript:__xss(\'form\')"><button>go</button></form>',
].join('\n\n');

/** Every payload calls window.__xss or opens a dialog: both are recorded, so a test can fail. */
export async function watchForExecution(page: Page): Promise<string[]> {
  const fired: string[] = [];
  await page.exposeBinding('__xss', (_source, what: string) => void fired.push(what));
  page.on('dialog', (d) => {
    fired.push(`dialog:${d.message()}`);
    void d.dismiss();
  });
  return fired;
}
