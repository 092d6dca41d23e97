"""Text tables for the benchmarks' console output: aligned columns, plain or Markdown."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
  """`rows[0]` is the header; every cell is already a string.

  Plain: columns separated by two spaces, a dashed rule under the header. Markdown: `| a | b |`
  rows with a `|---|` rule (what the README's tables paste).
  """
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  if markdown:
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
  else:
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)
