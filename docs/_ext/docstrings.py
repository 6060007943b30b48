"""A griffe extension: jaxcnn's docstrings, written for ``help()`` and ``doctest``, as Markdown.

The docstrings follow Google's sections with reST's inline literals (``x``, which Markdown reads
as code too). Two things Markdown would misread are rewritten before griffe parses them:

- a doctest (``>>>`` lines and their output, up to a blank line) becomes a fenced ``pycon``
  block; left alone, Markdown reads its output as text and ``['a', 'b']`` as a link;
- an argument line that lists several names over two lines (``w, b, stride,`` then
  ``padding: ...``) is joined into one, so the whole list stays one item;
- reST's ``Example::`` (a colon, then an indented literal block, which Markdown shows as code
  anyway) loses its second colon.
"""
from __future__ import annotations

import re

import griffe

_NAMES_CONTINUED = re.compile(r"^\s+[A-Za-z_][\w, ]*,$")
_EXAMPLES_SECTION = re.compile(r"^(\s*)Examples?:\s*$")   # griffe renders its >>> itself


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def markdown_docstring(text: str) -> str:
    """``text`` with its doctests fenced and its split argument-name lines joined."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        section = _EXAMPLES_SECTION.match(line)
        if section:
            out.append(line)
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(section.group(1))):
                out.append(lines[i])
                i += 1
            continue
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1])
            i += 1
            continue
        if _NAMES_CONTINUED.match(line) and i + 1 < len(lines):
            out.append(line + " " + lines[i + 1].strip())
            i += 2
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    """Rewrites every docstring with ``markdown_docstring`` as griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
