"""docs/python-api.md runs as written: every ```python block, in order, in one namespace, in
an empty folder; and the API's promises the examples rely on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cxrprobe

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_python_api_document_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the repository's own document
    printed = capsys.readouterr().out
    assert "shots must be at least 1 each" in printed and "best at 16 shots:" in printed
    assert (tmp_path / "synthetic-results" / "summary.csv").is_file()
    assert namespace["built"].rows == 80 and (tmp_path / "tiny-run" / "summary.json").is_file()


def test_import_is_light_and_names_resolve_lazily():
    done = subprocess.run([sys.executable, "-c", (
        "import sys, cxrprobe; assert 'numpy' not in sys.modules and 'torch' not in sys.modules;"
        "names = cxrprobe.list_heads(); assert 'numpy' not in sys.modules, 'list_heads imported numpy';"
        "assert {'run_fewshot', 'LogRegHead', 'open_cache'} <= set(dir(cxrprobe)); print(len(names))")],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "14", done.stderr


def test_api_errors_name_parameters_and_the_cli_names_flags(synthetic_cache, cli):
    with pytest.raises(cxrprobe.InputError, match=r"^seeds must be at least 1, got 0$"):
        cxrprobe.run_fewshot(synthetic_cache, shots=[1], seeds=0)
    with pytest.raises(cxrprobe.InputError, match=r"^test_bootstrap must be 0 or more"):
        cxrprobe.run_fewshot(synthetic_cache, shots=[1], seeds=1, test_bootstrap=-1)
    shown = cli("fewshot", "--cache", synthetic_cache, "--out", "unused", "--test-bootstrap", "-1")
    assert shown.code == 2 and "--test-bootstrap must be 0 or more" in shown.stderr


def test_arrays_must_come_with_patient_disjoint_splits(synthetic_cache):
    with cxrprobe.open_cache(synthetic_cache) as cache:
        X, Y, split, patients = cache.embeddings(), cache.labels, cache.table.split, cache.table.patient_ids.copy()
    test = np.flatnonzero(split == "test")
    patients[test[0]] = patients[np.flatnonzero(split == "train")[0]]  # one test image of a training patient
    with pytest.raises(cxrprobe.InputError, match="in both train and test"):
        cxrprobe.run_fewshot(embeddings=X, labels=Y, splits=split, patients=patients, shots=[1], seeds=1,
                             heads=["logreg"], jobs=1)


def test_a_grid_on_arrays_equals_the_grid_on_the_cache_they_came_from(synthetic_cache):
    with cxrprobe.open_cache(synthetic_cache) as cache:
        arrays = dict(embeddings=cache.embeddings(), labels=cache.labels, splits=cache.table.split,
                      patients=cache.table.patient_ids, text=cache.text_prompts())
    grid = dict(shots=[2], seeds=2, heads=["logreg", "zeroshot"], jobs=1)
    on_cache = cxrprobe.run_fewshot(synthetic_cache, **grid)
    on_arrays = cxrprobe.run_fewshot(**arrays, **grid)
    assert [r["mean_auc"] for r in on_cache.summary] == [r["mean_auc"] for r in on_arrays.summary]
    assert on_arrays.config["cache"] is None and "arrays" in on_arrays.config["label"]
