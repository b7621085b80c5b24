"""Encoders behind one interface, offline: torchxrayvision classifiers (image-only, one channel,
+-1024), open_clip from a local folder and an OpenAI-layout state dict (CheXzero's), pooled
features, presets; pixels checked against each library's own pipeline on real NIH images."""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources

import numpy as np
import pytest
import torch
from conftest import TINY
from helpers import assert_one_line_error, snapshot
from PIL import Image

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.images import Preprocessing, load_grey, to_model_input
from cxrprobe.models.loading import load_model

CPU = ("--device", "cpu", "--workers", "0")
XRV = ("--model", "xrv:densenet121-res224-all", "--pretrained", "none", *CPU)
REAL = "00000284_000.png"


def test_torchxrayvision_pixels_are_its_own_normalize_and_resize(real_nih):
    import skimage.io
    import torchxrayvision as xrv

    path = real_nih / "images" / REAL
    loaded = load_model("xrv:densenet121-res224-all", "none", "cpu")
    prep = loaded.preprocessing
    assert (prep.channels, prep.image_size) == (1, 224)
    image = skimage.io.imread(path)
    reference = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(xrv.datasets.normalize(image, 255)[None]))
    ours = to_model_input(torch.from_numpy(load_grey(str(path), prep))[None], prep, torch.float32)[0].numpy()
    assert ours.shape == reference.shape == (1, 224, 224)
    # Pillow's bilinear resize against scikit-image's smoothed one: under one grey level (8 units) on average
    assert np.abs(ours - reference).mean() < 5
    # without a resize, the scaling is torchxrayvision's to float precision, and so are the features
    small = np.asarray(Image.open(path).resize((224, 224)))
    grey = torch.from_numpy(small.copy())[None]
    scaled = to_model_input(grey, prep, torch.float32)
    expected = torch.from_numpy(xrv.datasets.normalize(small, 255)[None, None]).float()
    assert torch.allclose(scaled, expected, atol=1e-3)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded.encode_image(scaled), loaded.model.features2(expected), atol=1e-3)


def test_a_torchxrayvision_cache_is_image_only_and_runs_the_image_heads(small_dataset, tmp_path, cli):
    cache = tmp_path / "xrv.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", cache, *XRV).code == 0
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["encoder"] == {"backend": "torchxrayvision", "features": "pooled", "text": False,
                                  "text_scoring": None}
    assert summary["embed_dim"] == 1024 and summary["text_prompts"] == 0
    assert summary["preprocessing"]["channels"] == 1 and summary["preprocessing"]["std"] == [1 / 2048]
    assert "no text tower" in cli("info", cache).stdout
    out = tmp_path / "grid"
    grid = cli("fewshot", "--cache", cache, "--shots", "1", "--seeds", "2", "--jobs", "1", "--allow-undefined",
               "--out", out)
    assert grid.code == 0, grid.stderr
    assert "image-only encoder (torchxrayvision, pooled features)" in grid.stdout
    heads = json.loads((out / "config.json").read_text())["heads"]
    assert heads == ["paper-mlp", "logreg", "linear", "prototype", "knn", "logreg-cv"]
    before = snapshot(tmp_path)
    for text_head in ("zeroshot", "tip-adapter", "tip-adapter-f", "gda", "lp++", "zs-lp", "clap"):
        refused = cli("fewshot", "--cache", cache, "--heads", text_head, "--shots", "1", "--seeds", "1",
                      "--allow-undefined", "--out", tmp_path / "x")
        assert_one_line_error(refused, "xrv:densenet121-res224-all is an image-only encoder here")
    assert_one_line_error(cli("zeroshot", "--cache", cache, "--out", tmp_path / "x", "--allow-undefined"),
                          "holds no text embeddings")
    assert_one_line_error(cli("adapt", "--data-dir", small_dataset, "--out", tmp_path / "run", *XRV),
                          "adapt trains open_clip ViTs")
    assert snapshot(tmp_path) == before


def test_a_preset_with_local_weights_records_itself_and_warns_of_its_training_data(small_dataset, tmp_path, cli):
    """torchxrayvision's -all weights saw NIH: a state dict as torchxrayvision's model holds it
    (its operating-point thresholds included), and the warning on an NIH cache."""
    import torchxrayvision as xrv

    torch.manual_seed(1)
    model = xrv.models.DenseNet(weights=None)
    model.op_threshs = torch.rand(18)  # as torchxrayvision sets it for published weights
    torch.save(model.state_dict(), tmp_path / "txv-all.pt")
    cache = tmp_path / "preset.h5"
    embedded = cli("embed", "--data-dir", small_dataset, "--out", cache, "--encoder", "txv-densenet121-all",
                   "--pretrained", tmp_path / "txv-all.pt", *CPU)
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["encoder"]["preset"] == "txv-densenet121-all" and "nih-chestxray14" in summary["encoder"]["trained_on"]
    with FeatureCache(cache) as opened, torch.inference_mode():
        grey = torch.from_numpy(load_grey(str(small_dataset / "images" / opened.table.image_ids[0]),
                                          Preprocessing(**{**summary["preprocessing"],
                                                           "mean": tuple(summary["preprocessing"]["mean"]),
                                                           "std": tuple(summary["preprocessing"]["std"])})))
        x = (grey.float()[None, None] / 255 - 0.5) * 2048
        np.testing.assert_allclose(opened.embeddings()[0], model.eval().features2(x)[0], atol=2e-2, rtol=1e-2)
    out = tmp_path / "grid"
    grid = cli("fewshot", "--cache", cache, "--shots", "1", "--seeds", "2", "--heads", "prototype", "--jobs", "1",
               "--allow-undefined", "--out", out)
    assert grid.code == 0, grid.stderr
    assert "warning: the encoder's weights were trained on nih-chestxray14" in grid.stdout
    assert grid.stdout.index("warning:") < grid.stdout.index("prototype")  # in the table's header
    config = json.loads((out / "config.json").read_text())
    assert "not those of an unseen dataset" in config["encoder"]["contamination"]
    assert "warning: grid: the encoder's weights were trained on" in cli("report", out).stdout


def test_a_torchxrayvision_resnet_reads_its_wrapper_s_state_dict(tmp_path):
    import torchvision

    inner = torchvision.models.resnet50(num_classes=18, weights=None)
    inner.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    state = {f"model.{k}": v for k, v in inner.state_dict().items()} | {"op_threshs": torch.rand(18)}
    torch.save(state, tmp_path / "resnet.pt")
    loaded = load_model("xrv:resnet50-res512-all", str(tmp_path / "resnet.pt"), "cpu")
    assert loaded.preprocessing.image_size == 512 and loaded.embed_dim == 2048
    x = torch.randn(1, 1, 512, 512)
    inner.fc = torch.nn.Identity()
    with torch.inference_mode():
        np.testing.assert_allclose(loaded.encode_image(x), inner.eval()(x), atol=1e-4)


def chexzero_reference(path, size):
    """CheXzero's own pipeline, from its data_process.py and zero_shot.py: letterbox to 320 px
    (Lanczos), resize to 224 px (bicubic), mean / std 101.48761 / 83.43944 on 0-255 values."""
    img = Image.open(path).convert("L")
    ratio = 320 / max(img.size)
    new = tuple(int(x * ratio) for x in img.size)
    img = img.resize(new, Image.LANCZOS)
    square = Image.new("L", (320, 320))
    square.paste(img, ((320 - new[0]) // 2, (320 - new[1]) // 2))
    values = np.asarray(square.resize((size, size), Image.BICUBIC), dtype=np.float32)
    return (values - 101.48761) / 83.43944


def test_chexzero_is_an_openai_layout_state_dict_read_with_its_letterbox(real_nih, tmp_path, cli):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "chexzero.pt")  # the layout CheXzero's checkpoints have
    data = tmp_path / "nih"
    data.mkdir()
    for item in real_nih.iterdir():
        (data / item.name).symlink_to(item)
    cache = tmp_path / "chexzero.h5"
    embedded = cli("embed", "--data-dir", data, "--out", cache, "--encoder", "chexzero", "--pretrained",
                   tmp_path / "chexzero.pt", *CPU)
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    prep = summary["preprocessing"]
    assert prep["resize_mode"] == "letterbox" and prep["mean"] == [0.39799] * 3 and prep["std"] == [0.32721] * 3
    assert summary["encoder"]["preset"] == "chexzero" and summary["encoder"]["text"] is True
    assert summary["text_prompts"] > 0
    # a non-square crop of a real image: the letterbox pads it as CheXzero's does
    wide = tmp_path / "wide.png"
    with Image.open(real_nih / "images" / REAL) as img:
        img.crop((0, 100, 1024, 700)).save(wide)
    chexzero = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in prep.items()})  # as recorded
    ours = to_model_input(torch.from_numpy(load_grey(str(wide), chexzero))[None], chexzero, torch.float32)[0, 0]
    reference = chexzero_reference(wide, 224)
    padding = np.abs(reference) > 0  # rows the image covers differ only by the resampling
    assert np.allclose(ours.numpy()[:30], reference[:30], atol=1e-4)  # black bars, exactly
    assert np.abs(ours.numpy() - reference)[padding].mean() < 0.05  # one step against two: ~3 grey levels at most
    with FeatureCache(cache) as opened, torch.inference_mode():
        row = opened.table.image_ids.tolist().index(REAL)
        grey = torch.from_numpy(load_grey(str(real_nih / "images" / REAL), chexzero))[None]
        expected = model.eval().encode_image(to_model_input(grey, chexzero, torch.float32))[0]
        np.testing.assert_allclose(opened.embeddings()[row], expected, atol=2e-2, rtol=1e-2)


def test_an_open_clip_folder_loads_its_own_weights_offline(tmp_path, small_dataset, cli):
    from safetensors.torch import save_file

    folder = tmp_path / "tiny-folder"
    shutil.copytree(resources.files("cxrprobe.models") / "configs" / "cxrprobe-tiny", folder)
    weights = load_model("cxrprobe-tiny", "none", "cpu").model.state_dict()
    shifted = {k: (v + 0.01 if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(shifted, str(folder / "open_clip_model.safetensors"))
    from_folder = load_model(f"local-dir:{folder}", "openai", "cpu")
    by_file = load_model("cxrprobe-tiny", str(folder / "open_clip_model.safetensors"), "cpu")
    assert from_folder.weights_sha256 == by_file.weights_sha256 != load_model("cxrprobe-tiny", "none", "cpu").weights_sha256
    assert from_folder.pretrained.endswith("open_clip_model.safetensors") and from_folder.has_text
    cache = tmp_path / "folder.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", cache, "--model", f"local-dir:{folder}", *CPU).code == 0
    assert json.loads(cli("info", cache, "--json").stdout)["weights_sha256"] == by_file.weights_sha256


def test_a_hub_name_neither_cached_nor_local_fails_at_once(tmp_path, small_dataset, cli):
    before = snapshot(tmp_path)
    started = time.perf_counter()
    failed = cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "x.h5", "--model",
                 "hf-hub:nobody-here/no-such-model", *CPU)
    assert time.perf_counter() - started < 10  # no network retries
    assert_one_line_error(failed, "is not in the local Hugging Face cache")
    assert "--pretrained FILE" in failed.stderr and "local-dir:FOLDER" in failed.stderr
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "x.h5", "--model",
                              f"local-dir:{tmp_path}", *CPU), "holds no open_clip_config.json")
    assert snapshot(tmp_path) == before


def test_pooled_features_drop_the_projection_and_the_text(small_dataset, tmp_path, cli):
    projected = load_model("cxrprobe-tiny", "none", "cpu")
    pooled = load_model("cxrprobe-tiny", "none", "cpu", features="pooled")
    assert (projected.embed_dim, pooled.embed_dim) == (32, 64)  # the tiny ViT's width, before its projection
    assert pooled.weights_sha256 == projected.weights_sha256 and not pooled.has_text
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        np.testing.assert_allclose(pooled.encode_image(x) @ projected.model.visual.proj, projected.encode_image(x),
                                   atol=1e-5)
    cache = tmp_path / "pooled.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", cache, *TINY, "--features", "pooled").code == 0
    assert json.loads(cli("info", cache, "--json").stdout)["encoder"]["features"] == "pooled"
    # a resumed run of the other feature point is another run
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", cache, *TINY, "--resume"),
                          "was written by another run")
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "x.h5", *TINY, "--features",
                              "raw"), "--features must be one of projected, pooled, got 'raw'")


def test_presets_are_listed_and_an_unknown_one_is_one_line(cli, tmp_path, small_dataset):
    listed = json.loads(cli("encoders", "--json").stdout)
    names = [preset["name"] for preset in listed]
    assert {"chexzero", "biomedclip", "txv-densenet121-all"} <= set(names)
    assert all(preset["model"] and preset["weights"] and preset["source"] for preset in listed)
    assert "mlmed/torchxrayvision#47" in cli("encoders").stdout
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "x.h5", "--encoder",
                              "chexzer0", *CPU), "unknown encoder 'chexzer0'; did you mean chexzero")
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "x.h5", "--encoder",
                              "chexzero", "--model", "ViT-B-16", *CPU),
                          "--encoder chexzero names its model (ViT-B-32-quickgelu); --model may only point it at")
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "x.h5", "--encoder",
                              "chexzero", *CPU), "--encoder chexzero takes its weights from --pretrained FILE")


# every preset is embedded offline from local weights by one test: these, the CheXzero test
# above, and the hub presets' in test_encoders_hf.py
TXV_PRESETS = ("txv-densenet121-all", "txv-densenet121-nih", "txv-densenet121-chex", "txv-resnet50-all")
HUB_PRESETS = ("biomedclip", "rad-dino", "medsiglip-448")


def test_every_preset_has_its_offline_test():
    from cxrprobe.models.encoders.presets import presets

    assert {p.name for p in presets()} == {"chexzero", *TXV_PRESETS, *HUB_PRESETS}


@pytest.mark.parametrize("name", TXV_PRESETS)
def test_each_torchxrayvision_preset_embeds_from_a_state_dict(name, small_dataset, tmp_path, cli):
    import torchvision
    import torchxrayvision as xrv

    from cxrprobe.models.encoders.presets import find_preset

    preset = find_preset(name)
    torch.manual_seed(2)
    if "resnet" in name:  # torchxrayvision's ResNet wraps torchvision's as .model
        inner = torchvision.models.resnet50(num_classes=18, weights=None)
        inner.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        state = {f"model.{k}": v for k, v in inner.state_dict().items()}
    else:
        state = xrv.models.DenseNet(weights=None).state_dict()
    torch.save(state, tmp_path / "w.pt")
    cache = tmp_path / "c.h5"
    embedded = cli("embed", "--data-dir", small_dataset, "--out", cache, "--encoder", name, "--pretrained",
                   tmp_path / "w.pt", "--limit", "2", *CPU)
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["encoder"]["preset"] == name and summary["rows"] == 2
    assert summary["weights_sha256"] != load_model(preset.model, "none", "cpu").weights_sha256
