"""Hugging Face transformers encoders offline: tiny randomly initialised CLIP, SigLIP and DINOv2
models saved with ``save_pretrained`` (with a word-level tokenizer for the text towers), each
embedded end to end and run through fewshot; pixels against the model's own
``AutoImageProcessor`` on real NIH images."""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources

import numpy as np
import pytest
import torch
import transformers
from helpers import assert_one_line_error, snapshot
from PIL import Image

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.images import load_grey, to_model_input
from cxrprobe.models.loading import load_model

CPU = ("--device", "cpu", "--workers", "0")
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
WORDS = ["[PAD]", "[UNK]", "a", "chest", "x-ray", "showing", "no", "finding", "normal", "with", "findings"]


def word_tokenizer():
    """A word-level tokenizer over a few prompt words, built offline (a real model ships its own)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                                model_max_length=16)


def text_config():
    # eos 2: CLIP's own pooling then reads the highest token id, as OpenAI's does
    return dict(vocab_size=len(WORDS), max_position_embeddings=16, bos_token_id=None, eos_token_id=2,
                pad_token_id=0, **TOWER)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    vision = dict(image_size=64, patch_size=16, **TOWER)
    torch.manual_seed(0)
    built = {
        "clip": (transformers.CLIPModel(transformers.CLIPConfig(text_config=text_config(), vision_config=vision,
                                                                 projection_dim=24)),
                 transformers.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})),
        "siglip": (transformers.SiglipModel(transformers.SiglipConfig(text_config=text_config(), vision_config=vision)),
                   transformers.SiglipImageProcessor(size={"height": 64, "width": 64})),
        # DINOv2's processor shape: the shorter side resized (256 for the real one), a smaller crop (224)
        "dinov2": (transformers.Dinov2Model(transformers.Dinov2Config(**vision)),
                   transformers.BitImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64})),
    }
    for kind, (model, processor) in built.items():
        model.save_pretrained(root / kind)
        processor.save_pretrained(root / kind)
        if kind != "dinov2":
            word_tokenizer().save_pretrained(root / kind)
    return root


@pytest.mark.parametrize("kind", ["clip", "siglip", "dinov2"])
def test_pixels_are_the_model_s_own_image_processor_s(folders, real_nih, tmp_path, kind):
    loaded = load_model(f"hf:{folders / kind}", "folder", "cpu")
    processor = transformers.AutoImageProcessor.from_pretrained(folders / kind, local_files_only=True)
    wide = tmp_path / "wide.png"
    with Image.open(real_nih / "images" / "00000284_000.png") as img:
        img.crop((0, 100, 1024, 700)).save(wide)  # not square: the resize and the crop both matter
    for path in (real_nih / "images" / "00000284_000.png", wide):
        with Image.open(path) as img:
            reference = processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"]
        grey = torch.from_numpy(load_grey(str(path), loaded.preprocessing))[None]
        ours = to_model_input(grey, loaded.preprocessing, torch.float32)
        assert ours.shape == reference.shape
        assert (ours - reference).abs().mean() < 0.01  # under a grey level: Pillow's resize and the processor's


@pytest.mark.parametrize("kind, text, scoring, dim", [("clip", True, "softmax", 24), ("siglip", True, "sigmoid", 32),
                                                      ("dinov2", False, None, 32)])
def test_each_transformers_model_embeds_and_runs_fewshot(folders, small_dataset, tmp_path, cli, kind, text, scoring,
                                                         dim):
    cache = tmp_path / f"{kind}.h5"
    embedded = cli("embed", "--data-dir", small_dataset, "--out", cache, "--model", f"hf:{folders / kind}",
                   "--pretrained", "folder", *CPU)
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["encoder"] == {"backend": "transformers", "features": "projected" if text else "pooled",
                                  "text": text, "text_scoring": scoring}
    assert summary["embed_dim"] == dim and (summary["text_prompts"] > 0) == text
    model = transformers.AutoModel.from_pretrained(folders / kind, local_files_only=True).eval()
    with FeatureCache(cache) as opened, torch.inference_mode():
        loaded = load_model(f"hf:{folders / kind}", "folder", "cpu")
        grey = torch.from_numpy(load_grey(str(small_dataset / "images" / opened.table.image_ids[0]),
                                          loaded.preprocessing))[None]
        x = to_model_input(grey, loaded.preprocessing, torch.float32)
        expected = model.get_image_features(pixel_values=x).pooler_output if text else model(pixel_values=x).pooler_output
        np.testing.assert_allclose(opened.embeddings()[0], expected[0], atol=2e-2, rtol=1e-2)
    out = tmp_path / "grid"
    grid = cli("fewshot", "--cache", cache, "--shots", "1", "--seeds", "2", "--jobs", "1", "--allow-undefined",
               "--out", out, "--heads", "prototype,logreg" + (",zeroshot,tip-adapter" if text else ""))
    assert grid.code == 0, grid.stderr
    if not text:
        assert_one_line_error(cli("fewshot", "--cache", cache, "--heads", "zeroshot", "--out", tmp_path / "x"),
                              "is an image-only encoder here")


def test_siglip_records_its_sigmoid_scale_and_bias(folders):
    model = transformers.SiglipModel.from_pretrained(folders / "siglip", local_files_only=True)
    loaded = load_model(f"hf:{folders / 'siglip'}", "folder", "cpu")
    assert loaded.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert loaded.logit_bias == pytest.approx(float(model.logit_bias.detach()))
    assert load_model(f"hf:{folders / 'clip'}", "folder", "cpu", features="pooled").embed_dim == 32  # before projection


def test_a_hub_name_not_in_the_cache_fails_at_once(tmp_path, small_dataset, cli):
    before = snapshot(tmp_path)
    started = time.perf_counter()
    failed = cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "x.h5", "--model",
                 "hf:nobody-here/no-such-model", *CPU)
    assert time.perf_counter() - started < 10
    assert_one_line_error(failed, "is neither a folder nor in the local Hugging Face cache")
    assert snapshot(tmp_path) == before


def hub_cache(root, repo, folder):
    """A local Hugging Face cache holding ``folder``'s files as ``repo``'s snapshot, laid out as
    huggingface_hub lays one out."""
    snapshot_dir = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abc"
    shutil.copytree(folder, snapshot_dir)
    (snapshot_dir.parents[1] / "refs").mkdir()
    (snapshot_dir.parents[1] / "refs" / "main").write_text("0123abc")


@pytest.mark.parametrize("name, kind, text", [("rad-dino", "dinov2", False), ("medsiglip-448", "siglip", True),
                                              ("biomedclip", "open_clip", True)])
def test_each_hub_preset_loads_from_the_local_cache_offline(name, kind, text, folders, small_dataset, tmp_path, cli,
                                                            monkeypatch):
    """A preset's hub name resolved from the local cache alone (here a cache holding a tiny model
    under the preset's repo name), and the same from a folder given with --model."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    from cxrprobe.models.encoders.presets import find_preset

    preset = find_preset(name)
    source = folders / kind
    if kind == "open_clip":  # the bundled tiny config and its random weights, as the hub folder holds them
        source = tmp_path / "tiny-open-clip"
        shutil.copytree(resources.files("cxrprobe.models") / "configs" / "cxrprobe-tiny", source)
        save_file(load_model("cxrprobe-tiny", "none", "cpu").model.state_dict(), str(source / "open_clip_model.safetensors"))
    cache_dir = tmp_path / "hub"
    hub_cache(cache_dir, preset.model.split(":", 1)[1], source)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache_dir))
    out = tmp_path / "c.h5"
    embedded = cli("embed", "--data-dir", small_dataset, "--out", out, "--encoder", name, "--limit", "4", *CPU)
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", out, "--json").stdout)
    assert summary["encoder"]["preset"] == name and summary["encoder"]["text"] is text
    local = tmp_path / "local.h5"
    folder = f"hf:{source}" if kind != "open_clip" else f"local-dir:{source}"
    assert cli("embed", "--data-dir", small_dataset, "--out", local, "--encoder", name, "--model", folder,
               "--limit", "4", *CPU).code == 0
    assert json.loads(cli("info", local, "--json").stdout)["weights_sha256"] == summary["weights_sha256"]
