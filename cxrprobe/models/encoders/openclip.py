"""open_clip models: a model name (an open_clip name, a bundled config, ``hf-hub:ORG/NAME``
resolved from the local Hugging Face cache, or ``local-dir:FOLDER`` holding an
``open_clip_config.json`` and weights) plus weights from a tag, a local file, or none.

``--pretrained`` takes an open_clip tag (``openai``), a path to a weights file (safetensors,
or a state dict read with ``weights_only=True``: open_clip's own or an OpenAI-layout one such
as CheXzero's), or ``none`` for random weights. Random weights are drawn from a fixed seed
without touching the caller's RNG state, so ``none`` gives the same model in every process
(an interrupted embed resumes with the very weights it started with). Tag weights come from
the Hugging Face cache when they are there, and are downloaded only when they are not.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cxrprobe.data.images import RESIZE_MODES, Preprocessing
from cxrprobe.errors import ModelError
from cxrprobe.models.encoders.base import NO_WEIGHTS, RANDOM_INIT_SEED, SIGMOID, SOFTMAX, LoadedModel, cached_snapshot
from cxrprobe.models.weights import load_into, read_state_dict, weights_sha256
from cxrprobe.seeding import seeded_cpu


def _open_clip():  # noqa: ANN202 - the module
    """open_clip, imported on first use: with torchvision it takes seconds to import, which a
    command stopping at bad input (a missing data dir, a malformed table) need not pay."""
    import open_clip

    return open_clip


def bundled_models() -> list[str]:
    """Model configs shipped with cxrprobe (tiny ones for tests and the demo)."""
    root = resources.files("cxrprobe.models") / "configs"
    return sorted(p.name for p in root.iterdir() if (p / "open_clip_config.json").is_file())


def _open_clip_name(name: str) -> str:
    if name in bundled_models():
        return "local-dir:" + str(resources.files("cxrprobe.models") / "configs" / name)
    return name


def check_model_name(name: str) -> None:
    known = set(_open_clip().list_models()) | set(bundled_models())
    if name in known:
        return
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown model {name!r}{hint} (open_clip.list_models() lists them all)")


def load_open_clip(name: str, pretrained: str, device: torch.device, visual_only: bool = False,
                   features: str = "projected") -> LoadedModel:
    """Build ``name`` with weights from ``pretrained`` (tag, file or 'none'), in eval mode, on
    ``device``; ``visual_only`` leaves the text tower on the CPU, for work that only encodes
    images. ``features`` "pooled" drops the visual projection (its text tower then has no
    common space with the images, so the model counts as image-only)."""
    folder = _schema_folder(name)
    if folder is None:
        check_model_name(name)
    model, pretrained = _build(name, pretrained) if folder is None else _build_from_folder(folder, pretrained)
    model.eval()
    (model.visual if visual_only else model).to(device)
    identity = weights_sha256(model)  # the weights, whichever feature is read from them
    preprocessing = _preprocessing(model)
    encode_texts = _text_encoder(model, name if folder is None else f"local-dir:{folder}", device)
    if features == "pooled":
        _drop_projection(model.visual, name)
        encode_texts = None
    return LoadedModel(
        model=model, name=name, pretrained=pretrained, weights_sha256=identity, preprocessing=preprocessing,
        embed_dim=_embed_dim(model, preprocessing, named=features == "projected"), device=device, encode_image=model.encode_image,
        encode_texts=encode_texts, backend="open_clip", features=features, **_temperature(model),
    )


def _text_encoder(model: torch.nn.Module, name: str, device: torch.device):  # noqa: ANN202
    tokenizer = _open_clip().get_tokenizer(_open_clip_name(name))

    def encode_texts(texts) -> np.ndarray:  # noqa: ANN001
        with torch.inference_mode():
            return model.encode_text(tokenizer(list(texts)).to(device)).float().cpu().numpy()

    return encode_texts


def _drop_projection(visual: torch.nn.Module, name: str) -> None:
    """open_clip's ViT applies ``proj`` after pooling only when it is set: unset, the tower
    returns the pooled features."""
    if not isinstance(getattr(visual, "proj", None), torch.Tensor):
        raise ModelError(f"--features pooled needs an open_clip ViT image tower with a projection; {name} has none")
    visual.proj = None


def _schema_folder(name: str) -> Path | None:
    """The folder of a ``local-dir:`` name, or of an ``hf-hub:`` one in the local Hugging Face
    cache (found there without touching the network); None for a plain open_clip name."""
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise ModelError(f"{folder} holds no open_clip_config.json; local-dir:FOLDER names a folder with the "
                             "model's open_clip_config.json and its weights")
        return folder
    if not name.startswith("hf-hub:"):
        return None
    repo = name.removeprefix("hf-hub:")
    folder = cached_snapshot(repo, "open_clip_config.json")
    if folder is None:
        raise ModelError(f"{name} is not in the local Hugging Face cache, and cxrprobe downloads no model: fetch it "
                         f"once where there is a network (huggingface-cli download {repo}), or give --model "
                         "local-dir:FOLDER (its open_clip_config.json and weights), or --pretrained FILE with the "
                         "matching open_clip model name")
    return folder


def _build_from_folder(folder: Path, pretrained: str) -> tuple[torch.nn.Module, str]:
    """A model from a folder's open_clip_config.json: random (``none``), a weights file's, or
    the folder's own weights; built without any download (no base tower weights fetched)."""
    with seeded_cpu(RANDOM_INIT_SEED):
        model = _open_clip().create_model(f"local-dir:{folder}", load_weights=False, pretrained_image=False,
                                          pretrained_text=False)
    if pretrained == NO_WEIGHTS:
        return model, pretrained
    given = Path(pretrained)
    if given.is_file():
        load_into(model, read_state_dict(given), str(given), str(folder))
        return model, pretrained
    own = next((folder / f for f in FOLDER_WEIGHTS if (folder / f).is_file()), None)
    if own is None:
        raise ModelError(f"{folder} holds no weights ({' or '.join(FOLDER_WEIGHTS)}); give --pretrained FILE or none")
    load_into(model, read_state_dict(own), str(own), str(folder))
    return model, str(own)


FOLDER_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _build(name: str, pretrained: str) -> tuple[torch.nn.Module, str]:
    return _built(name, pretrained), pretrained


def _built(name: str, pretrained: str) -> torch.nn.Module:
    """The model with ``pretrained``'s weights, found (or refused) before the model is built:
    a bad tag or file, or weights out of reach offline, cost no model."""
    path = None
    if pretrained != NO_WEIGHTS:
        tags = [] if name in bundled_models() else _open_clip().list_pretrained_tags_by_model(name)
        if pretrained in tags:
            path = _cached_tag_file(name, pretrained)
            if path is None:
                return _download_tag(name, pretrained)
        else:
            path = Path(pretrained)
            if not path.exists():
                if "/" in pretrained or "." in pretrained:
                    raise ModelError(f"weights file {pretrained} does not exist")
                known = ", ".join(tags) if tags else "none for this model"
                raise ModelError(f"unknown pretrained tag {pretrained!r} for {name} (known tags: {known}); "
                                 "give a weights file or 'none'")
    with seeded_cpu(RANDOM_INIT_SEED):
        model = _open_clip().create_model(_open_clip_name(name), pretrained=None, load_weights=False)
    if path is not None:
        label = str(path) if pretrained not in tags else f"the cached {pretrained!r} weights"
        load_into(model, read_state_dict(path), label, name)
    return model


def _cached_tag_file(name: str, tag: str) -> Path | None:
    """The tag's weights in the local Hugging Face cache, without touching the network."""
    cfg = _open_clip().get_pretrained_cfg(name, tag)
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub.rstrip("/"), "")
    candidates = [filename] if filename else []
    candidates += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for candidate in candidates:
        found = try_to_load_from_cache(repo_id=repo, filename=candidate)
        if isinstance(found, str):
            return Path(found)
    return None


def _download_tag(name: str, tag: str) -> torch.nn.Module:
    from huggingface_hub import constants

    try:
        if constants.HF_HUB_OFFLINE:  # no download to try: say so before building the model
            raise RuntimeError("HF_HUB_OFFLINE is set")
        return _open_clip().create_model(name, pretrained=tag)
    except Exception as exc:  # open_clip wraps every download failure in RuntimeError
        reason = str(exc).splitlines()[0][:160]
        raise ModelError(
            f"cannot get the {tag!r} weights for {name}: they are not in the local cache and the "
            f"download failed ({reason}); pass a local weights file with --pretrained FILE, "
            "or --pretrained none for random weights"
        ) from None


def _preprocessing(model: torch.nn.Module) -> Preprocessing:
    cfg = _open_clip().get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ModelError(f"non-square model input {tuple(size)} is not supported")
        size = size[0]
    resize_mode = cfg.get("resize_mode", "shortest")
    interpolation = cfg.get("interpolation", "bicubic")
    if resize_mode not in RESIZE_MODES or interpolation not in ("bicubic", "bilinear"):
        raise ModelError(f"unsupported preprocessing: resize_mode {resize_mode}, interpolation {interpolation}")
    return Preprocessing(
        image_size=int(size),
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        interpolation=interpolation,
        resize_mode=resize_mode,
    )


def _temperature(model: torch.nn.Module) -> dict[str, object]:
    """The model's own logit scale (stored as its log) and bias, for heads that turn cosines
    into logits, and how its text scores (SigLIP's sigmoid where it has a bias); a model
    without them gets CLIP's 100 and no bias."""
    scale, bias = getattr(model, "logit_scale", None), getattr(model, "logit_bias", None)
    values: dict[str, object] = {"text_scoring": SIGMOID if isinstance(bias, torch.Tensor) else SOFTMAX}
    if isinstance(scale, torch.Tensor):
        values["logit_scale"] = float(scale.detach().float().exp().reshape(-1)[0])
    if isinstance(bias, torch.Tensor):
        values["logit_bias"] = float(bias.detach().float().reshape(-1)[0])
    return values


def _embed_dim(model: torch.nn.Module, preprocessing: Preprocessing, named: bool = True) -> int:
    """The width of ``encode_image``'s output. open_clip's own towers name it (``named``: the
    projected width); a timm tower (ConvNeXt, EVA, SigLIP...) does not, nor pooled features,
    and is probed with one blank image on the device its weights are on, wherever that is."""
    dim = getattr(getattr(model, "visual", None), "output_dim", None) if named else None
    if dim is None:
        weight = next(getattr(model, "visual", model).parameters())
        size = preprocessing.image_size
        with torch.inference_mode():
            probe = torch.zeros(1, 3, size, size, device=weight.device, dtype=weight.dtype)
            dim = model.encode_image(probe).shape[-1]
    return int(dim)
