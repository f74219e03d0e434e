"""report.md -> report.html: CommonMark (with tables) rendered by markdown-it-py, every figure embedded, one file."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:0 auto;padding:1em 1.5em 4em;
 line-height:1.45;color:#1d232b;overflow-wrap:break-word}
h1{font-size:1.6em;margin:.6em 0 .3em}h2{border-bottom:1px solid #dde2e8;padding-bottom:.2em;margin-top:1.8em}
h3{margin-top:1.5em}
.card{border:1px solid #c9d3df;border-left:6px solid #3b6ea8;border-radius:8px;background:#f5f8fc;padding:.3em 1.2em;
 margin:1em 0 1.5em}
.card.bad{border-left-color:#b8442e}.card p{margin:.45em 0}
nav.toc ul{margin:.2em 0}
table{border-collapse:collapse;font-size:13px;display:block;overflow-x:auto;max-width:100%;margin:.5em 0}
td,th{border:1px solid #d3d8de;padding:2px 7px;vertical-align:top;text-align:left}
th{background:#eef2f6}tr:nth-child(even) td{background:#fafbfc}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
details{border:1px solid #dde2e8;border-radius:6px;padding:.3em .9em;margin:.6em 0;background:#fcfdfe}
summary{cursor:pointer;font-weight:600;color:#2c4f7c}
code{background:#f0f2f5;padding:0 .25em;border-radius:3px;overflow-wrap:anywhere}
pre{overflow-x:auto}
.note{color:#4a5560;font-size:.95em}
"""


def slug(text: str, seen: dict[str, int]) -> str:
    """A heading's anchor as GitHub makes it (lower case, spaces to dashes), made unique with -1, -2, ..."""
    base = re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-") or "section"
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


OWN_TAGS = re.compile(r'</?(?:details|summary)>|<div class="card(?: bad)?">|</div>')  # what build.py writes


def own_html_only(text: str) -> str:
    """Raw HTML in report.md as text, except the few tags dlrecipe itself writes: a recipe name, a CSV cell or a
    summary value such as <script> is shown, never run."""
    out, pos = [], 0
    for m in OWN_TAGS.finditer(text):
        out += [html.escape(text[pos:m.start()], quote=False), m.group(0)]
        pos = m.end()
    return "".join(out) + html.escape(text[pos:], quote=False)


def render(md: str, run_dir: Path, figures: list[Path], title: str) -> str:
    """report.md as a self-contained HTML page: headings with anchors (the table of contents links to them),
    tables that scroll inside their box, figures embedded as base64 PNG."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": True}).enable("table")
    seen: dict[str, int] = {}

    def heading_open(self, tokens, idx, options, env):
        inline = tokens[idx + 1]
        tokens[idx].attrSet("id", slug(inline.content, seen))
        return self.renderToken(tokens, idx, options, env)

    parser.add_render_rule("heading_open", heading_open)
    for rule in ("html_block", "html_inline"):
        parser.add_render_rule(rule, lambda self, tokens, idx, options, env: own_html_only(tokens[idx].content))
    body = parser.render(md)
    for fig in figures:  # src="3-search/search_curves.png" -> the PNG itself
        rel = html.escape(str(fig.relative_to(run_dir)))
        data = base64.b64encode(fig.read_bytes()).decode()
        body = body.replace(f'src="{rel}"', f'src="data:image/png;base64,{data}"')
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}</body></html>\n")
