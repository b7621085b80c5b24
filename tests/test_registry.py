"""The head registry: the data the CLI lists agrees with the classes, and reading it is light."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cxrprobe.heads.registry import CXRPROBE, OFFICIAL, PAPER, REGISTRY, head_class, make_head

# Constructor parameters that carry data or switches rather than a hyperparameter with a default.
NOT_DEFAULTS = {"text", "center", "init_state", "random_state", "search"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_entry_agrees_with_its_class(name):
    info = REGISTRY[name]
    cls = head_class(name)
    signature = inspect.signature(cls)
    hyperparameters = {k: p.default for k, p in signature.parameters.items() if k not in NOT_DEFAULTS}
    assert {k: d.value for k, d in info.defaults.items()} == hyperparameters
    assert all(d.source in (PAPER, OFFICIAL, CXRPROBE) for d in info.defaults.values())
    assert all(d.note for d in info.defaults.values() if d.source == OFFICIAL), "name the repository"
    assert info.uses_text == cls.uses_text
    # one name for "search on validation": a ``search`` parameter, or a head that always searches
    assert ("search" in signature.parameters) == (info.search_when == "--search")
    if info.search_when == "--search":
        assert make_head(name, None, None, random_state=0, search=True).get_params()["search"] is True
    if info.search_when == "always":
        assert cls().uses_validation
    assert info.description.endswith(".") and len(info.description) <= 110


def test_the_cli_lists_every_head_with_its_defaults_and_sources(cli):
    listed = cli("heads", "--json")
    assert listed.code == 0, listed.stderr
    heads = json.loads(listed.stdout)
    assert [h["name"] for h in heads] == list(REGISTRY) and len(heads) == 14
    logreg = next(h for h in heads if h["name"] == "logreg")
    assert logreg["defaults"]["C"] == {"value": 0.316, "source": OFFICIAL, "note": REGISTRY["logreg"].defaults["C"].note}
    assert logreg["search"] == {"selects": REGISTRY["logreg"].searches, "when": "--search"}
    assert next(h for h in heads if h["name"] == "logreg-cv")["search"]["when"] == "always"
    assert next(h for h in heads if h["name"] == "zeroshot")["needs_text"] is True
    table = cli("heads")
    assert table.code == 0
    for name in REGISTRY:
        assert name in table.stdout
    help_text = " ".join(cli("fewshot", "--help").stdout.split())
    for name in REGISTRY:
        assert name in help_text, name


def test_refusing_bad_fewshot_options_imports_nothing_heavy(tmp_path):
    """Parsing and refusing --shots, --heads, --protocol, --jobs needs neither torch nor FAISS."""
    code = (
        "import sys\n"
        "from cxrprobe.cli import main\n"
        "for bad in (['--shots', '1,a'], ['--heads', 'svm'], ['--protocol', 'x'], ['--jobs', '0'], ['--seeds', '0']):\n"
        "    try:\n"
        f"        main(['fewshot', '--cache', {str(tmp_path / 'c.h5')!r}, '--out', {str(tmp_path / 'r')!r}, *bad])\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 2, stop.code\n"
        "heavy = sorted({'torch', 'faiss', 'sklearn', 'h5py', 'scipy'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cxrprobe: error: ") == 5, done.stderr


def test_docs_heads_table_is_the_registry():
    """docs/heads.md's defaults table lists every default, its value and its source as the
    registry has them: the document cannot drift from the code."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "heads.md").read_text()
    table = doc[doc.index("| head | parameter | default | source |"):]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
            if line.startswith("|")]
    registry = [[info.name, key, str(d.value), d.source] for info in REGISTRY.values()
                for key, d in info.defaults.items()]
    assert rows == registry
