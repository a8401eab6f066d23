"""Markdown helpers the docs/protocol.md generators share."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["table"]


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """A Markdown table (cells with ``|`` escaped, newlines flattened) and a blank line."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [
        "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
        for row in rows
    ]
    return [*lines, ""]
