// KaTeX and its stylesheet travel together in one lazily loaded chunk.
import katex from 'katex';
import 'katex/dist/katex.min.css';

export default katex;
