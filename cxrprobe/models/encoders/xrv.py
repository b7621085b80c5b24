"""torchxrayvision's supervised chest X-ray classifiers as image-only encoders (Cohen et al.,
MIDL 2022): ``xrv:densenet121-res224-all`` (also -nih, -chex, -pc, -mimic_nb, -mimic_ch,
-rsna: a DenseNet-121, its 1024-d pooled features) and ``xrv:resnet50-res512-all`` (a
ResNet-50 at 512 px, 2048-d). One channel, scaled to +-1024 as torchxrayvision's
``normalize`` does, centre-cropped and resized as its ``XRayCenterCrop`` and ``XRayResizer``.

Weights: ``none`` (random, for tests), or a state dict file (safetensors, or a .pt read with
``weights_only=True``). torchxrayvision publishes its weights as pickled models, which
cxrprobe does not unpickle; save one's state dict once, where its download is trusted::

    python -c "import torchxrayvision as x, torch; torch.save(x.models.get_model('densenet121-res224-all').state_dict(), 'txv-all.pt')"
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxrprobe.data.images import Preprocessing
from cxrprobe.errors import ModelError
from cxrprobe.models.encoders.base import NO_WEIGHTS, RANDOM_INIT_SEED, LoadedModel
from cxrprobe.models.weights import load_into, read_state_dict, weights_sha256
from cxrprobe.seeding import seeded_cpu

PREFIX = "xrv:"
# torchxrayvision's normalize: (2 x / 255 - 1) * 1024 = (x / 255 - 0.5) / (1 / 2048)
XRV_MEAN, XRV_STD = (0.5,), (1 / 2048,)
DENSENET_CLASSES = 18  # torchxrayvision's default pathologies; a state dict's classifier says its own
RESNET_CLASSES = 18


def is_xrv(name: str) -> bool:
    return name.startswith(PREFIX)


def load_xrv(name: str, pretrained: str, device: torch.device, features: str = "pooled") -> LoadedModel:
    weights = name.removeprefix(PREFIX)
    if features != "pooled":
        raise ModelError(f"{name} is an image-only classifier: its features are the pooled ones (--features pooled)")
    state = None if pretrained == NO_WEIGHTS else _features_state(read_state_dict(_weights_file(pretrained, name)))
    if weights.startswith("densenet121"):
        model, size, width = _densenet(state), 224, 1024
        encode = model.features2
    elif weights.startswith("resnet50"):
        model, size, width = _resnet50(state), 512, 2048
        encode = model
    else:
        raise ModelError(f"unknown torchxrayvision model {weights!r}: give xrv:densenet121-res224-<weights> or "
                         "xrv:resnet50-res512-all")
    model.eval().to(device)
    preprocessing = Preprocessing(image_size=size, mean=XRV_MEAN, std=XRV_STD, channels=1, interpolation="bilinear",
                                  resize_mode="shortest")
    return LoadedModel(model=model, name=name, pretrained=pretrained, weights_sha256=weights_sha256(model),
                       preprocessing=preprocessing, embed_dim=width, device=device, encode_image=encode,
                       backend="torchxrayvision", features="pooled")


def _weights_file(pretrained: str, name: str) -> Path:
    path = Path(pretrained)
    if not path.is_file():
        raise ModelError(f"{name} takes --pretrained FILE (a state dict: .safetensors, or .pt saved from the model's "
                         f"state_dict()) or none; {pretrained!r} is no such file")
    return path


def _features_state(state: dict) -> dict:
    """A torchxrayvision state dict as the bare model takes it: its ResNet wrapper's ``model.``
    prefix dropped, and the operating-point thresholds (which rescale only the classifier's
    outputs, never the features) left out."""
    if state and all(key.startswith("model.") or key == "op_threshs" for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if key != "op_threshs"}


def _densenet(state: dict | None) -> torch.nn.Module:
    import torchxrayvision as xrv

    classes = DENSENET_CLASSES if state is None or "classifier.weight" not in state else state["classifier.weight"].shape[0]
    with seeded_cpu(RANDOM_INIT_SEED):
        model = xrv.models.DenseNet(weights=None, num_classes=int(classes))
    if state is not None:
        load_into(model, state, "the DenseNet-121 weights", "xrv:densenet121")
    return model


def _resnet50(state: dict | None) -> torch.nn.Module:
    """torchvision's ResNet-50 as torchxrayvision builds it (one input channel), its classifier
    replaced by the identity: the output is the pooled features."""
    import torchvision

    classes = RESNET_CLASSES if state is None or "fc.weight" not in state else state["fc.weight"].shape[0]
    with seeded_cpu(RANDOM_INIT_SEED):
        model = torchvision.models.resnet50(num_classes=int(classes), weights=None)
        model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if state is not None:
        load_into(model, state, "the ResNet-50 weights", "xrv:resnet50-res512-all")
    model.fc = torch.nn.Identity()
    return model
