"""open_clip model loading: a model name plus weights from a tag, a local file, or none.

``--pretrained`` takes an open_clip tag (``openai``), a path to a weights file, or ``none``
for random weights. Random weights are drawn from a fixed seed without touching the caller's
RNG state, so ``none`` gives the same model in every process (an interrupted embed resumes
with the very weights it started with). Tag weights come from the Hugging Face cache when
they are there, and are downloaded only when they are not.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import torch

from cxrprobe.data.images import Preprocessing
from cxrprobe.errors import ModelError
from cxrprobe.models.device import resolve_device
from cxrprobe.models.text import OPENAI_LOGIT_SCALE
from cxrprobe.models.weights import load_into, read_state_dict, weights_sha256
from cxrprobe.seeding import seeded_cpu

RANDOM_INIT_SEED = 0
NO_WEIGHTS = "none"


@dataclass
class LoadedModel:
    """A ready open_clip model and everything a cache records about it."""

    model: torch.nn.Module
    name: str
    pretrained: str
    weights_sha256: str
    preprocessing: Preprocessing
    embed_dim: int
    device: torch.device
    head: torch.nn.Module | None = None  # an adapted run's MLP head, scored beside the embeddings
    logit_scale: float = OPENAI_LOGIT_SCALE  # exp(logit_scale): the temperature of image-text cosines
    logit_bias: float = 0.0  # SigLIP's; 0 for CLIP models

    def reading_with(self, intensity: str, dicom_window: str) -> LoadedModel:
        """This model with 16-bit images and DICOM files turned to 8 bits as these policies say
        (``Preprocessing``)."""
        return replace(self, preprocessing=replace(self.preprocessing, intensity=intensity, dicom_window=dicom_window))

    def tokenizer(self):  # noqa: ANN201 - open_clip's tokenizer classes share no base type
        return _open_clip().get_tokenizer(_open_clip_name(self.name))


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


def load_model(name: str, pretrained: str, device: str | torch.device = "cpu", visual_only: bool = False) -> LoadedModel:
    """Build ``name`` with weights from ``pretrained`` (tag, file or 'none'), in eval mode, on
    ``device`` (a torch.device, or text for resolve_device); ``visual_only`` leaves the text
    tower on the CPU, for work that only encodes images."""
    check_model_name(name)
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    model = _build(name, pretrained)
    model.eval()
    (model.visual if visual_only else model).to(torch_device)
    return LoadedModel(
        model=model,
        name=name,
        pretrained=pretrained,
        weights_sha256=weights_sha256(model),
        preprocessing=_preprocessing(model),
        embed_dim=_embed_dim(model),
        device=torch_device,
        **_temperature(model),
    )


def _build(name: str, pretrained: str) -> torch.nn.Module:
    with seeded_cpu(RANDOM_INIT_SEED):
        model = _open_clip().create_model(_open_clip_name(name), pretrained=None)
    if pretrained == NO_WEIGHTS:
        return model
    tags = [] if name in bundled_models() else _open_clip().list_pretrained_tags_by_model(name)
    if pretrained in tags:
        path = _cached_tag_file(name, pretrained)
        if path is None:
            return _download_tag(name, pretrained)
        load_into(model, read_state_dict(path), f"the cached {pretrained!r} weights", name)
        return model
    path = Path(pretrained)
    if not path.exists():
        looks_like_path = "/" in pretrained or "." in pretrained
        if looks_like_path:
            raise ModelError(f"weights file {pretrained} does not exist")
        known = ", ".join(tags) if tags else "none for this model"
        raise ModelError(
            f"unknown pretrained tag {pretrained!r} for {name} (known tags: {known}); "
            "give a weights file or 'none'"
        )
    load_into(model, read_state_dict(path), str(path), name)
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
    try:
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
    if resize_mode not in ("shortest", "squash") or interpolation not in ("bicubic", "bilinear"):
        raise ModelError(f"unsupported preprocessing: resize_mode {resize_mode}, interpolation {interpolation}")
    return Preprocessing(
        image_size=int(size),
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        interpolation=interpolation,
        resize_mode=resize_mode,
    )


def _temperature(model: torch.nn.Module) -> dict[str, float]:
    """The model's own logit scale (stored as its log) and bias, for heads that turn cosines
    into logits; a model without them (an image-only tower) gets CLIP's 100 and no bias."""
    scale, bias = getattr(model, "logit_scale", None), getattr(model, "logit_bias", None)
    values = {}
    if isinstance(scale, torch.Tensor):
        values["logit_scale"] = float(scale.detach().float().exp().reshape(-1)[0])
    if isinstance(bias, torch.Tensor):
        values["logit_bias"] = float(bias.detach().float().reshape(-1)[0])
    return values


def _embed_dim(model: torch.nn.Module) -> int:
    """The width of ``encode_image``'s output. open_clip's own towers name it; a timm tower
    (ConvNeXt, EVA, SigLIP...) does not, and is probed with one blank image on the device its
    weights are on, wherever that is."""
    dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if dim is None:
        weight = next(getattr(model, "visual", model).parameters())
        size = _preprocessing(model).image_size
        with torch.inference_mode():
            probe = torch.zeros(1, 3, size, size, device=weight.device, dtype=weight.dtype)
            dim = model.encode_image(probe).shape[-1]
    return int(dim)
