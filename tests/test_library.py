"""cxrprobe as a library: calls leave the process as they found it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_library_calls_change_no_global_state(synthetic_cache, tmp_path):
    """A grid, its results dir and its plots, in a fresh interpreter: no pyplot, no backend
    switched, torch's and FAISS's thread counts and every logger as they were."""
    script = textwrap.dedent(f"""
        import logging, sys
        import faiss, matplotlib, torch
        torch.set_num_threads(2); faiss.omp_set_num_threads(2)
        backend = dict.__getitem__(matplotlib.rcParams, "backend")  # get_backend() would import pyplot
        loggers = {{name: (lg.level, list(lg.handlers)) for name, lg in logging.root.manager.loggerDict.items()
                    if isinstance(lg, logging.Logger)}}
        root = (logging.getLogger().level, list(logging.getLogger().handlers))
        from cxrprobe.commands.fewshot import run_fewshot
        run_fewshot({str(synthetic_cache)!r}, shots=[1, 2], seeds=2, heads=["logreg", "knn"], jobs=1, out={str(tmp_path / "out")!r})
        assert "matplotlib.pyplot" not in sys.modules
        assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
        assert torch.get_num_threads() == 2 and faiss.omp_get_max_threads() == 2
        assert (logging.getLogger().level, list(logging.getLogger().handlers)) == root
        for name, (level, handlers) in loggers.items():
            assert (logging.getLogger(name).level, logging.getLogger(name).handlers) == (level, handlers), name
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
