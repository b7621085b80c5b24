"""Reading weights files safely and fingerprinting a model's weights.

Nothing here unpickles arbitrary objects: ``.safetensors`` files go through safetensors,
anything else through ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError

from cxrprobe.errors import ModelError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from the usual checkpoint containers."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: object = load_file(str(path), device="cpu")
        else:
            if zipfile.is_zipfile(path) and _is_torchscript(path):
                raise ModelError(
                    f"{path} is a TorchScript archive (OpenAI's original format); "
                    "load it once with open_clip and save its state_dict, or pass a tag from the open_clip cache"
                )
            loaded = load_tensors_only(path)
    except ModelError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile,
            SafetensorError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not a weights file that can be read safely: {reason[:200]}") from None
    state = _unwrap(loaded)
    if state is None:
        raise ModelError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_tensors_only(path: Path) -> object:
    """``torch.load(weights_only=True)``: tensors and plain containers, never arbitrary objects.

    torch warns about pickle protocols it did not write; the file is refused or read either
    way, so the warning would only add lines to a one-line error.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True)


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _unwrap(loaded: object) -> dict[str, torch.Tensor] | None:
    for _ in range(3):
        if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return {str(k): v for k, v in loaded.items()}
        if isinstance(loaded, dict):
            inner = next((loaded[k] for k in ("state_dict", "model", "model_state_dict") if k in loaded), None)
            if inner is None:
                return None
            loaded = inner
    return None


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    """Load ``state`` strictly; a mismatch names what is missing or extra."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise ModelError(f"{source} is not a {model_name} checkpoint: {'; '.join(parts)}")
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        raise ModelError(
            f"{source} does not fit {model_name}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
            f"the model expects {tuple(own[wrong[0]].shape)}"
        )
    model.load_state_dict(state, strict=True)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    return state_sha256(model.state_dict())


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors of a state dict (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
