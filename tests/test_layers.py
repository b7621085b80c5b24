"""The layers DEVELOPERS.md declares hold: every import in the package, at module level or
inside a function, points down the list (or stays inside its own package)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cxrprobe"


def declared_layers() -> dict[str, int]:
    """{'errors': 1, 'labels': 1, 'fsutil': 2, ...} from DEVELOPERS.md's numbered list."""
    text = (ROOT / "DEVELOPERS.md").read_text()
    block = text.split("<!-- layers: the test reads this list -->")[1].split("<!-- end layers -->")[0]
    layers = {}
    for line in block.splitlines():
        match = re.match(r"\s*(\d+)\.\s+(.*?):", line)
        if match:
            for name in re.findall(r"`([\w.]+)`", match.group(2)):
                layers[name] = int(match.group(1))
    return layers


def unit(module: str) -> str:
    """The layer unit of a dotted module: its first part below cxrprobe (the package root itself is 'api')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every cxrprobe import in the file, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "cxrprobe"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cxrprobe":
            # `from cxrprobe import eval` imports cxrprobe.eval, not the package root's API
            if node.module == "cxrprobe":
                found += [(node.lineno, f"cxrprobe.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}:{node.lineno}: relative import"
    return found


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_every_import_points_down_the_declared_layers():
    layers = declared_layers()
    assert len(set(layers.values())) >= 8, layers  # the list was found and read
    wrong = []
    for module, path in modules().items():
        here = unit(module)
        assert here in layers, f"{module} belongs to no layer in DEVELOPERS.md"
        for line, target in imports(path):
            there = unit(target)
            assert there in layers, f"{path}:{line} imports {target}, which belongs to no layer"
            if there != here and layers[there] >= layers[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} {module} ({here}, layer {layers[here]}) imports "
                             f"{target} ({there}, layer {layers[there]})")
    assert not wrong, "imports against DEVELOPERS.md's layers:\n" + "\n".join(wrong)


def test_the_layer_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from cxrprobe.report.results import publish_folder\n")
    assert imports(source) == [(2, "cxrprobe.report.results")]
