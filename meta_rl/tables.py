"""The one table formatter: aligned plain text for terminals, or a Markdown table for reports.

Used by ``meta-rl envs`` (``meta_rl.envs.catalog``), ``meta-rl evaluate``, the benchmarks and
the experiment scripts. Standard library only, so any layer may import it (the task families
included, which otherwise import nothing of ``meta_rl``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_cell(value: Any, float_format: str = "{:.3f}") -> str:
    """``str(value)``, except floats, which get ``float_format``."""
    return float_format.format(value) if isinstance(value, float) else str(value)


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    align: str = "l",
    rule: bool = False,
    markdown: bool = False,
    float_format: str = "{:.3f}",
) -> str:
    """Format ``rows`` under ``header``; short rows are padded with empty cells.

    Plain text: columns two spaces apart, each left (``l``) or right (``r``) aligned, ``align``
    giving one letter for every column or one per column; ``rule`` puts a dashed line under the
    header; trailing spaces are stripped. ``markdown``: a GitHub table (alignment is left to
    the renderer).
    """
    width = len(header)
    cells = [list(header)]
    for row in rows:
        if len(row) > width:
            raise ValueError(f"row has {len(row)} cells, the header {width}: {row!r}")
        cells.append([format_cell(v, float_format) for v in row] + [""] * (width - len(row)))
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        lines.insert(1, "|" + "---|" * width)
        return "\n".join(lines)
    aligns = align * width if len(align) == 1 else align
    if len(aligns) != width or set(aligns) - {"l", "r"}:
        raise ValueError(f"align: one of l/r per column ({width}), got {align!r}")
    widths = [max(len(row[i]) for row in cells) for i in range(width)]

    def line(row: Sequence[str]) -> str:
        parts = (
            cell.ljust(w) if a == "l" else cell.rjust(w)
            for cell, w, a in zip(row, widths, aligns, strict=True)
        )
        return "  ".join(parts).rstrip()

    lines = [line(row) for row in cells]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
