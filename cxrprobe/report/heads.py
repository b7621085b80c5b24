"""Plain-text rendering of ``cxrprobe heads``: one block per head, readable at 80 columns and
easy to grep."""

from __future__ import annotations

import textwrap

INDENT = " " * 4
SOURCES = ("Sources: paper = the partial CLIP adaptation paper; official code = the method's own "
           "repository (named); cxrprobe = this project's choice. Every default is validation-free.")


def heads_text(heads: list[dict], width: int = 100) -> str:
    lines = []
    for head in heads:
        lines.append(f"{head['name']}: {head['description']}")
        needs = ", ".join(filter(None, ["text prompts" if head["needs_text"] else "", head["needs"] or ""]))
        lines.append(f"{INDENT}needs: {needs or 'embeddings only'}")
        search = head["search"]
        if search is not None:
            when = "always" if search["when"] == "always" else "with --search"
            lines.append(f"{INDENT}selects on validation ({when}): {search['selects']}")
        for name, default in head["defaults"].items():
            note = f": {default['note']}" if default["note"] else ""
            lines.extend(textwrap.wrap(f"{name} = {default['value']} ({default['source']}{note})", width,
                                       initial_indent=INDENT, subsequent_indent=INDENT * 2))
        lines.append("")
    lines.extend(textwrap.wrap(SOURCES, width))
    return "\n".join(lines)
