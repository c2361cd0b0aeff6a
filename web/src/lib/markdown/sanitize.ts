/**
 * The one gate between model/user text and the DOM: DOMPurify with an allowlist.
 *
 * Links keep only http, https and mailto targets (an allowlist, never a blocklist of bad
 * schemes); images, forms, styles, SVG and MathML never survive. Buttons only come from the
 * citation renderer (raw HTML in the text is escaped before this step), and only as plain
 * buttons carrying a source number. KaTeX output is produced
 * after this step by KaTeX itself (trust: false), never from sanitized strings.
 */
import DOMPurify from 'dompurify';

const SAFE_URL = /^(?:https?:|mailto:)/i;

const ALLOWED_TAGS = [
  'a', 'b', 'blockquote', 'br', 'button', 'code', 'del', 'div', 'em', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6',
  'hr', 'i', 'li', 'mark', 'ol', 'p', 'pre', 's', 'span', 'strong', 'sub', 'sup',
  'table', 'tbody', 'td', 'th', 'thead', 'tr', 'ul',
];
// data-tex carries math source to the lazy KaTeX step; data-lang names a code block's language;
// data-cite is a citation button's source number.
const ALLOWED_ATTR = ['href', 'title', 'class', 'align', 'role', 'aria-label'];
const DATA_ATTR = new Set(['data-tex', 'data-display', 'data-lang', 'data-cite']);

let hooked = false;

function installHooks(): void {
  if (hooked) return;
  hooked = true;
  DOMPurify.addHook('uponSanitizeAttribute', (_node, data) => {
    if (data.attrName.startsWith('data-') && !DATA_ATTR.has(data.attrName)) data.keepAttr = false;
  });
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      const href = node.getAttribute('href') ?? '';
      if (!SAFE_URL.test(href.trim())) node.removeAttribute('href');
      node.setAttribute('rel', 'noopener noreferrer nofollow');
      node.setAttribute('target', '_blank');
    }
    // Never a submit button, whatever form it might end up in.
    if (node.tagName === 'BUTTON') node.setAttribute('type', 'button');
  });
}

export function sanitize(html: string): string {
  installHooks();
  return DOMPurify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOWED_URI_REGEXP: SAFE_URL,
    ALLOW_DATA_ATTR: true, // only DATA_ATTR's names survive (hook above)
    RETURN_TRUSTED_TYPE: false,
  });
}

export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#x27;': "'", '&#39;': "'" };

/**
 * Search snippets arrive as HTML: the text escaped (Python's html.escape), hits in <mark>.
 * Only the <mark> pairs are kept as markup; the rest is decoded to text and escaped again
 * here, so the page never trusts the server's HTML.
 */
export function highlightSnippet(snippet: string): string {
  const parts = snippet.split(/<\/?mark>/i);
  const text = (p: string) => escapeHtml(p.replace(/&(?:amp|lt|gt|quot|#x27|#39);/g, (e) => ENTITIES[e] ?? e));
  // Markers alternate: outside, inside, outside, ...
  return parts.map((p, i) => (i % 2 === 1 ? `<mark>${text(p)}</mark>` : text(p))).join('');
}
