"""`cxrprobe demo` runs the whole pipeline offline and says where to look."""

from __future__ import annotations

import csv


def test_demo_end_to_end(tmp_path, cli):
    out = tmp_path / "demo"
    result = cli("demo", "--out", out)
    assert result.code == 0, result.stderr
    assert "auc_vs_shots.png" in result.stdout and "zeroshot is at chance" in result.stdout
    assert (out / "demo.h5").is_file() and (out / "results" / "auc_vs_shots.png").is_file()
    with open(out / "results" / "summary.csv", newline="") as handle:
        mean = {(r["head"], int(r["shots"])): float(r["mean_auc"]) for r in csv.DictReader(handle)}
    for head in ("logreg", "prototype", "knn"):
        assert mean[(head, 8)] > mean[(head, 1)] and mean[(head, 8)] > 0.7, head
    assert abs(mean[("zeroshot", 1)] - 0.5) < 0.15  # random text tower: chance, as the demo says
    again = cli("demo", "--out", out)
    assert again.code == 2 and "is not empty" in again.stderr
