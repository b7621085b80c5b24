"""Hugging Face transformers encoders: ``hf:FOLDER`` or ``hf:ORG/NAME`` (from the local Hugging
Face cache only: nothing is downloaded), read with ``AutoModel``, ``AutoImageProcessor`` and,
for CLIP-like models, ``AutoTokenizer``. CLIP (PubMedCLIP...) and SigLIP (MedSigLIP) models
embed images and prompts, SigLIP's text scored by a sigmoid with its scale and bias; any other
model (DINOv2, RAD-DINO) is image-only, its embedding the pooler output (DINOv2's: the CLS
token). Weights are read from safetensors only. transformers is an optional extra
(``pip install 'cxrprobe[hf]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cxrprobe.data.images import Preprocessing
from cxrprobe.errors import ModelError
from cxrprobe.models.encoders.base import NO_WEIGHTS, RANDOM_INIT_SEED, SIGMOID, SOFTMAX, LoadedModel, cached_snapshot
from cxrprobe.models.weights import weights_sha256
from cxrprobe.seeding import seeded_cpu

PREFIX = "hf:"
TEXT_MODELS = {"clip": SOFTMAX, "siglip": SIGMOID}  # model_type -> how its text scores
RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's numbering, which the processors' configs use


def is_hf(name: str) -> bool:
    return name.startswith(PREFIX)


def load_hf(name: str, pretrained: str, device: torch.device, features: str | None = None) -> LoadedModel:
    """``pretrained`` ``none`` builds the config with random weights (tests); anything else
    reads the folder's own safetensors weights."""
    transformers = _transformers(name)
    transformers.utils.logging.disable_progress_bar()  # cxrprobe's own progress is on stderr; its errors one line
    source = _source(name.removeprefix(PREFIX))
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
        processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=True)
        if pretrained == NO_WEIGHTS:
            with seeded_cpu(RANDOM_INIT_SEED):
                model = transformers.AutoModel.from_config(config)
        else:
            model = transformers.AutoModel.from_pretrained(source, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {name} from {source}: {str(exc).splitlines()[0][:200]}") from None
    model.eval().to(device)
    kind = config.model_type
    text = kind in TEXT_MODELS and features != "pooled"
    if features == "projected" and kind not in TEXT_MODELS:
        raise ModelError(f"{name} ({kind}) is image-only: it has no projected features; use --features pooled")
    # transformers 5's get_*_features return the tower's output, the projected embedding as its pooler_output
    encode_image = (lambda x: model.get_image_features(pixel_values=x).pooler_output) if text else _pooled(model, kind)
    preprocessing = _preprocessing(processor, name)
    encode_texts = _text_encoder(transformers, source, model, kind, device) if text else None
    scale, bias = getattr(model, "logit_scale", None), getattr(model, "logit_bias", None)
    return LoadedModel(
        model=model, name=name, pretrained=pretrained if pretrained == NO_WEIGHTS else str(source),
        weights_sha256=weights_sha256(model), preprocessing=preprocessing,
        embed_dim=_width(encode_image, preprocessing, device), device=device, encode_image=encode_image,
        encode_texts=encode_texts, backend="transformers", features="projected" if text else "pooled",
        logit_scale=float(scale.detach().exp()) if text and scale is not None else 100.0,
        logit_bias=float(bias.detach()) if text and bias is not None else 0.0,
        text_scoring=TEXT_MODELS.get(kind, SOFTMAX),
    )


def _transformers(name: str):  # noqa: ANN202 - the module
    try:
        import transformers
    except ImportError:
        raise ModelError(f"{name} needs transformers: pip install 'cxrprobe[hf]'") from None
    return transformers


def _source(name: str) -> str:
    """A local folder, or a hub name's snapshot folder in the local cache (no network)."""
    if Path(name).is_dir():
        return name
    folder = cached_snapshot(name, "config.json")
    if folder is None:
        raise ModelError(f"hf:{name} is neither a folder nor in the local Hugging Face cache, and cxrprobe downloads "
                         f"no model: fetch it once where there is a network (huggingface-cli download {name}), "
                         "then give --model hf:FOLDER or the hub name again")
    return str(folder)


def _pooled(model: torch.nn.Module, kind: str):  # noqa: ANN202
    """A CLIP-like model's vision tower's pooled output (before its projection), or an
    image-only model's pooler output (DINOv2's CLS token after its final layer norm)."""
    tower = model.vision_model if kind in TEXT_MODELS else model
    return lambda x: tower(pixel_values=x).pooler_output


def _text_encoder(transformers, source: str, model: torch.nn.Module, kind: str, device: torch.device):  # noqa: ANN001, ANN202
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    padding = "max_length" if kind == "siglip" else True  # SigLIP was trained on prompts padded to its length

    def encode_texts(texts) -> np.ndarray:  # noqa: ANN001
        tokens = tokenizer(list(texts), padding=padding, truncation=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            return model.get_text_features(**tokens).pooler_output.float().cpu().numpy()

    return encode_texts


def _preprocessing(processor, name: str) -> Preprocessing:  # noqa: ANN001
    """The processor's resize, crop, interpolation, mean and std as cxrprobe's preprocessing:
    a resize of the shorter side then a centre crop (CLIP's, RAD-DINO's of the same size,
    DINOv2's smaller), or a resize of both sides (SigLIP's)."""
    size, crop = processor.size, getattr(processor, "crop_size", None)
    shortest, height, width = (getattr(size, side, None) for side in ("shortest_edge", "height", "width"))
    cropped = bool(getattr(processor, "do_center_crop", False)) and crop is not None
    resize = None
    if shortest:
        target, mode = int(shortest), "shortest"
        if cropped and (crop.height, crop.width) != (target, target):
            if crop.height != crop.width or crop.height > target:
                raise ModelError(f"{name} resizes to {target} px and crops {crop.height} x {crop.width}: only a "
                                 "square crop no larger than the resize is supported")
            target, resize = int(crop.height), target  # DINOv2's: the shorter side to 256, then 224 cropped
    elif height and height == width:
        target, mode = int(height), "squash"
    else:
        raise ModelError(f"{name}'s image processor resizes to {size}, which cxrprobe does not support")
    resample = int(getattr(processor, "resample", 3))
    if resample not in RESAMPLE:
        raise ModelError(f"{name}'s image processor resamples with PIL filter {resample}; bilinear or bicubic only")
    mean, std = tuple(float(v) for v in processor.image_mean), tuple(float(v) for v in processor.image_std)
    return Preprocessing(image_size=target, mean=mean, std=std, interpolation=RESAMPLE[resample], resize_mode=mode,
                         resize_size=resize)


def _width(encode_image, preprocessing: Preprocessing, device: torch.device) -> int:  # noqa: ANN001
    size = preprocessing.image_size
    with torch.inference_mode():
        return int(encode_image(torch.zeros(1, preprocessing.channels, size, size, device=device)).shape[-1])
