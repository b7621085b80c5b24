"""``cxrprobe encoders`` as text: each preset, its model, weights, preprocessing and notes."""

from __future__ import annotations

import textwrap

from cxrprobe.report.heads import INDENT


def encoders_text(presets: list[dict], width: int = 100) -> str:
    lines = []
    for preset in presets:
        lines.append(f"{preset['name']}: --model {preset['model']}")
        facts = [("weights", preset["weights"]),
                 ("preprocessing", ", ".join(f"{k} {v}" for k, v in preset["preprocessing"].items()) or
                  "the model's own"),
                 ("trained on", ", ".join(preset["trained_on"]) or "no benchmark dataset documented"),
                 ("source", preset["source"]), ("differs from its code", preset["differs"]), ("note", preset["notes"])]
        for label, text in facts:
            if text:
                lines.extend(textwrap.wrap(f"{label}: {text}", width, initial_indent=INDENT,
                                           subsequent_indent=INDENT * 2))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
