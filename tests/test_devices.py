"""The CUDA paths, checked on a CPU: device strings, precision per GPU generation, the width
probe, generators that seeding must not touch, the head outside autocast, loss scaling, TF32,
out-of-memory, and runs that must not mix devices. Where a GPU is needed, its answers are
faked (capability, name, device count) and what cxrprobe does with them is checked."""

from __future__ import annotations

import contextlib
import json
import re

import numpy as np
import pytest
import torch
from conftest import TINY
from hypothesis import given
from hypothesis import strategies as st

from cxrprobe.errors import InputError
from cxrprobe.models import device as devices
from cxrprobe.models.device import choose_precision, parse_device, resolve_device
from cxrprobe.models.encode import encode_with_head
from cxrprobe.models.encoders.openclip import _embed_dim
from cxrprobe.models.loading import load_model
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.train.loop import TrainStep

CUDA0 = torch.device("cuda", 0)  # constructible without a GPU; only its type and index are read


def fake_gpu(monkeypatch, capability=(8, 0), name="NVIDIA A100", count=2):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


# --- device strings -------------------------------------------------------------------------

VALID = re.compile(r"auto|cpu|cuda|cuda:(0|[1-9][0-9]?|1[01][0-9]|12[0-7])")  # torch's index is 8-bit signed


@given(st.one_of(st.text(max_size=12), st.sampled_from(["cuda\n", "cuda:01", "cuda:007", " cuda", "cuda:1000",
                                                        "cuda:0\n", "cpu\n", "CUDA", "cuda:", "cuda:128"]),
                 st.from_regex(VALID, fullmatch=True)))
def test_device_strings_parse_exactly_or_are_refused(text):
    """Whatever parses, torch.device takes as written; nothing else parses (no newline, no
    leading zero), so a GPU machine never turns a typo into an internal error."""
    try:
        parsed = parse_device(text)
    except InputError as exc:
        assert "unknown device" in str(exc)
        assert VALID.fullmatch(text) is None
        return
    assert VALID.fullmatch(text) is not None and parsed == text
    if text != "auto":
        assert str(torch.device(text)) == text


def test_cuda_devices_resolve_against_what_torch_sees(monkeypatch):
    fake_gpu(monkeypatch, count=2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == resolve_device("auto") == CUDA0
    with pytest.raises(InputError, match="torch sees 2 CUDA device"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")


def test_a_cpu_fallback_says_why_when_torch_was_built_for_cuda(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert "built for CUDA 13.0 but can use no GPU" in devices.running_on(torch.device("cpu"), "fp32")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert devices.running_on(torch.device("cpu"), "fp32") == "on the CPU, precision fp32"


# --- precision per device ---------------------------------------------------------------------

@pytest.mark.parametrize("capability, training, expected", [
    ((8, 0), True, "bf16"), ((9, 0), True, "bf16"), ((7, 5), True, "fp16"), ((7, 0), True, "fp16"),
    ((8, 0), False, "fp16"), ((7, 5), False, "fp16"),
])
def test_auto_precision_follows_the_gpu_generation(monkeypatch, capability, training, expected):
    fake_gpu(monkeypatch, capability=capability)
    assert choose_precision("auto", CUDA0, training=training) == expected


def test_bf16_is_refused_where_the_gpu_only_emulates_it(monkeypatch):
    fake_gpu(monkeypatch, capability=(7, 5), name="Tesla T4")
    with pytest.raises(InputError, match=r"Tesla T4 \(compute capability 7.5\) has no native bf16.*--precision fp16"):
        choose_precision("bf16", CUDA0)
    fake_gpu(monkeypatch, capability=(8, 6), name="NVIDIA RTX A6000")
    assert choose_precision("bf16", CUDA0) == "bf16"
    cpu = torch.device("cpu")
    assert choose_precision("auto", cpu, training=True) == choose_precision("auto", cpu) == "fp32"
    assert choose_precision("bf16", cpu) == "bf16"
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        choose_precision("fp16", cpu)
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        choose_precision("fp8", cpu)


def test_fp32_on_cuda_turns_tf32_off_and_back(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    with devices.full_fp32(CUDA0, "fp32"):
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is True
    with devices.full_fp32(CUDA0, "bf16"), devices.full_fp32(torch.device("cpu"), "fp32"):
        assert torch.backends.cudnn.allow_tf32 is True


# --- the width probe, seeding, the head outside autocast --------------------------------------

def test_the_width_probe_runs_on_the_device_the_weights_are_on():
    """A timm tower names no output_dim: its width is probed, on its own device (meta here;
    before, a CPU tensor was fed to a model already on the GPU)."""
    loaded = load_model("cxrprobe-tiny", "none", "cpu")
    model = loaded.model
    del model.visual.output_dim
    model.to("meta")
    assert _embed_dim(model, loaded.preprocessing) == 32


def test_seeding_never_touches_a_cuda_generator(monkeypatch, small_dataset, tmp_path):
    """torch.manual_seed re-seeds every GPU, and fork_rng(devices=[]) restores only the CPU:
    model building, augmentation, the heads and dropout on the CPU must seed the CPU alone."""
    from cxrprobe.data.images import Preprocessing
    from cxrprobe.heads.linear import LinearHead
    from cxrprobe.heads.paper_mlp import PaperMlpHead
    from cxrprobe.seeding import seeded_on
    from cxrprobe.train.pixels import PixelDataset, build_pixel_cache

    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(("all", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("one", seed)))
    torch.manual_seed(1)  # the trap itself, to show the patch sees it
    assert calls == [("all", 1)]
    calls.clear()
    load_model("cxrprobe-tiny", "none", "cpu")
    paths = sorted(str(p) for p in (small_dataset / "images").glob("*.png"))[:2]
    pixels = build_pixel_cache(paths, tmp_path / "p.npy", Preprocessing(image_size=32), workers=0)
    PixelDataset(pixels, np.zeros((2, 14)), augment=True)[1, 0]
    X, Y = np.random.default_rng(0).normal(size=(6, 8)), np.eye(6, 14)
    PaperMlpHead(epochs=1).fit(X, Y)
    LinearHead(epochs=1).fit(X, Y)
    with seeded_on(torch.device("cpu"), 3):
        pass
    assert calls == []


def test_dropout_on_a_gpu_is_seeded_on_that_gpu_alone(monkeypatch):
    """On CUDA the device's own generator is forked and seeded, never every GPU's."""
    from cxrprobe.seeding import seeded_on

    forked, seeded, current = [], [], []

    @contextlib.contextmanager
    def fork_rng(devices, device_type):
        forked.append((tuple(devices), device_type))
        yield

    @contextlib.contextmanager
    def on_device(index):
        current.append(index)
        yield

    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    monkeypatch.setattr(torch.cuda, "device", on_device)
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append((current[-1], seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: pytest.fail("seeded every GPU"))
    with seeded_on(torch.device("cuda", 1), 42):
        pass
    assert forked == [((1,), "cuda")] and seeded == [(1, 42)]


def test_the_adapted_head_scores_in_fp32_under_bf16_autocast():
    """The stored logits are those of the fp32 head that validation chose, on the features the
    cache stores (under autocast the head's Linear layers ran in bf16: 0.016 off)."""
    loaded = load_model("cxrprobe-tiny", "none", "cpu")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        head = PaperHead(loaded.embed_dim).eval()
        grey = torch.randint(0, 256, (4, 112, 112), dtype=torch.uint8)
    adapted = loaded.__class__(**{**loaded.__dict__, "head": head})
    features, logits = encode_with_head(adapted, grey, "bf16")
    with torch.inference_mode():
        expected = head(torch.from_numpy(features)).numpy()
    assert np.array_equal(logits, expected)


# --- loss scaling -------------------------------------------------------------------------------

def _tiny_problem(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        layer = torch.nn.Linear(6, 3)
        x, y = torch.randn(8, 6), torch.rand(8, 3)
    return layer, x, y


def test_fp16_steps_scale_unscale_before_clipping_and_skip_overflows():
    """GradScaler's path on the CPU: the step equals the unscaled one (clipping saw the true
    gradients, not 65536 times them); an overflowing step is skipped and the scale backs off;
    the scaler's state round-trips through a checkpoint."""
    cpu = torch.device("cpu")
    plain_layer, x, y = _tiny_problem()
    scaled_layer, _, _ = _tiny_problem()
    plain = TrainStep(torch.optim.AdamW(plain_layer.parameters(), lr=0.1), "fp32", cpu)
    scaled = TrainStep(torch.optim.AdamW(scaled_layer.parameters(), lr=0.1), "fp16", cpu)
    assert plain.scaler is None and scaled.scaler is not None
    for step, layer in ((plain, plain_layer), (scaled, scaled_layer)):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(layer(x) * 100, y)  # clipping bites
        step(loss)
    for a, b in zip(plain_layer.parameters(), scaled_layer.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    before = [p.detach().clone() for p in scaled_layer.parameters()]
    scale = scaled.scaler.get_scale()
    scaled((scaled_layer(x) * float("inf")).sum())
    assert all(torch.equal(a, b) for a, b in zip(before, scaled_layer.parameters()))
    assert scaled.scaler.get_scale() == scale / 2
    again = TrainStep(torch.optim.AdamW(scaled_layer.parameters(), lr=0.1), "fp16", cpu)
    again.load_state_dict(scaled.state_dict())
    assert again.scaler.get_scale() == scale / 2


# --- out of memory, and runs that would mix devices ---------------------------------------------

def _out_of_memory(*_args, **_kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_is_one_line_naming_the_batch_size(small_dataset, tmp_path, cli, monkeypatch):
    monkeypatch.setattr("cxrprobe.commands.embed.launch_encode", _out_of_memory)
    result = cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "c.h5", *TINY, "--workers", "0",
                 "--batch-size", "8", "-q")
    assert result.code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "ran out of memory at --batch-size 8" in result.stderr and "--resume" in result.stderr
    assert (tmp_path / "c.h5.partial").exists() and not (tmp_path / "c.h5").exists()  # resumable


def test_a_working_file_started_on_another_device_is_not_continued(small_dataset, tmp_path, cli, monkeypatch):
    import h5py

    out, partial = tmp_path / "c.h5", tmp_path / "c.h5.partial"
    with monkeypatch.context() as patch:  # a run that stopped with its working file left
        patch.setattr("cxrprobe.commands.embed.launch_encode", _out_of_memory)
        assert cli("embed", "--data-dir", small_dataset, "--out", out, *TINY, "--workers", "0", "-q").code == 1
    with h5py.File(partial, "a") as f:
        assert f.attrs["device"] == "cpu" and json.loads(f.attrs["hardware"])["device"] == "cpu"
        f.attrs["device"] = "cuda"  # as a GPU run would have left it
    result = cli("embed", "--data-dir", small_dataset, "--out", out, *TINY, "--workers", "0", "--resume")
    assert result.code == 2 and "device is 'cuda' there but 'cpu' here" in result.stderr, result.stderr


def test_an_adapt_run_started_on_another_device_is_not_resumed(small_dataset, tmp_path, cli):
    run = tmp_path / "run"
    args = ("adapt", "--data-dir", small_dataset, "--out", run, *TINY, "--unfreeze", "1", "--epochs", "1",
            "--workers", "0", "-q")
    assert cli(*args).code == 0
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cpu" and config["precision"] == "fp32" and config["hardware"]["device"] == "cpu"
    assert len(config["base_weights_sha256"]) == 64
    (run / "config.json").write_text(json.dumps({**config, "device": "cuda"}))
    result = cli(*args, "--resume", "--epochs", "2")
    assert result.code == 2 and "holds a different run" in result.stderr, result.stderr
