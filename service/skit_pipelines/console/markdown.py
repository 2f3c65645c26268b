"""Markdown reports as safe HTML: a small subset (headings, paragraphs, lists, tables,
code, emphasis, links, images), everything else shown as text.

Every piece of source text is escaped before any markup is added, so raw HTML in a
report is shown, never run. Links go only to http(s) and open apart; images load only
from the report's own artifact (through `image_url`) or as inline PNG/JPEG data.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<strong>[^*]+)\*\*"
    r"|\*(?P<em>[^*]+)\*"
)
_HEADING = re.compile(r"(#{1,6})\s+(.*)")
_LIST_ITEM = re.compile(r"\s*(?:[-*+]|\d+[.)])\s+(.*)")
_TABLE_RULE = re.compile(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?")
_SAFE_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=]+")

ImageUrl = Callable[[str], str | None]
"""A relative image path in the report -> the URL that serves it, or None to refuse it."""


def render(source: str, image_url: ImageUrl) -> str:
    out: list[str] = []
    lines = source.splitlines()
    index = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph), image_url)}</p>")
            paragraph.clear()

    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            flush()
            block = []
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                block.append(lines[index])
                index += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(block))}</code></pre>")
        elif heading := _HEADING.fullmatch(line):
            flush()
            level = len(heading[1])
            out.append(f"<h{level}>{_inline(heading[2], image_url)}</h{level}>")
        elif (
            line.lstrip().startswith("|")
            and index + 1 < len(lines)
            and _TABLE_RULE.fullmatch(lines[index + 1].strip())
        ):
            flush()
            rows = [_cells(line)]
            index += 2
            while index < len(lines) and lines[index].lstrip().startswith("|"):
                rows.append(_cells(lines[index]))
                index += 1
            out.append(_table(rows, image_url))
            continue
        elif _LIST_ITEM.fullmatch(line):
            flush()
            ordered = line.lstrip()[:1].isdigit()
            items = []
            while index < len(lines) and (item := _LIST_ITEM.fullmatch(lines[index])):
                items.append(f"<li>{_inline(item[1], image_url)}</li>")
                index += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>{''.join(items)}</{tag}>")
            continue
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        index += 1
    flush()
    return "\n".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table(rows: list[list[str]], image_url: ImageUrl) -> str:
    head = "".join(f"<th>{_inline(c, image_url)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c, image_url)}</td>" for c in row) + "</tr>"
        for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str, image_url: ImageUrl) -> str:
    parts: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        parts.append(html.escape(text[position : match.start()]))
        position = match.end()
        if match["code"] is not None:
            parts.append(f"<code>{html.escape(match['code'])}</code>")
        elif match["src"] is not None:
            parts.append(_image(match["alt"], match["src"], image_url))
        elif match["href"] is not None:
            label = html.escape(match["text"])
            href = match["href"]
            if href.startswith(("https://", "http://")):
                parts.append(
                    f'<a href="{html.escape(href)}" rel="noopener noreferrer" target="_blank">'
                    f"{label}</a>"
                )
            else:
                parts.append(label)
        elif match["strong"] is not None:
            parts.append(f"<strong>{html.escape(match['strong'])}</strong>")
        else:
            parts.append(f"<em>{html.escape(match['em'])}</em>")
    parts.append(html.escape(text[position:]))
    return "".join(parts)


def _image(alt: str, src: str, image_url: ImageUrl) -> str:
    if _SAFE_DATA_IMAGE.fullmatch(src):
        url: str | None = src
    elif "://" in src or src.startswith(("/", "data:", "javascript:")):
        url = None
    else:
        url = image_url(src)
    if url is None:
        return f"<em>[image {html.escape(alt or src)} not shown]</em>"
    return f'<img alt="{html.escape(alt)}" src="{html.escape(url)}">'
