"""Which device and which precision a run uses, decided once, before any work.

``--device`` is parsed strictly (``cuda:1``, never ``cuda:01`` or ``"cuda\\n"``, which
``torch.device`` would refuse later as an internal error), then checked against what torch can
use. ``--precision auto`` follows the hardware: bf16 autocast only where the GPU has native
bf16 (compute capability 8.0 and up: A100, H100, L4, RTX 30xx...), fp16 on older ones (T4,
V100), fp32 on the CPU.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator

import torch

from cxrprobe.errors import InputError, OutOfMemory

DEVICE = re.compile(r"cpu|auto|cuda(?::(0|[1-9][0-9]{0,2}))?")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NATIVE_BF16 = (8, 0)  # the first compute capability with bf16 tensor cores (Ampere)


MAX_DEVICE_INDEX = 127  # torch keeps a device index in 8 signed bits: torch.device("cuda:200") is cuda:-56


def parse_device(text: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (N from 0 to 127, no leading zero), as given; else InputError."""
    match = DEVICE.fullmatch(text) if isinstance(text, str) else None
    if match is None or (match.group(1) is not None and int(match.group(1)) > MAX_DEVICE_INDEX):
        raise InputError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N")
    return text


def resolve_device(text: str) -> torch.device:
    """A parsed device that exists here; 'auto' is the current GPU when torch can use one."""
    text = parse_device(text)
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(f"--device {text} was asked for, but torch sees no CUDA device; use --device cpu or auto")
    device = torch.device(text)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise InputError(f"--device {text}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return torch.device("cuda", index)


def running_on(device: torch.device, precision: str) -> str:
    """What a run says when its work starts: the device, the GPU's name, the precision, and
    why there is no GPU when torch was built for one (no GPU visible, or a driver too old)."""
    text = f"on {hardware(device).describe()}, precision {precision}"
    if device.type == "cpu" and torch.version.cuda is not None:
        text += (f" (torch {torch.__version__} is built for CUDA {torch.version.cuda} but can use no GPU here: "
                 "none visible, or a driver too old for it)")
    return text


def process_device(text: str, local_rank: int | None = None) -> torch.device:
    """``--device`` resolved for this process: one of a launch's (``local_rank`` its place on
    the node) asking for 'auto' or 'cuda' takes its own GPU, cuda:LOCAL_RANK."""
    device = resolve_device(text)
    if local_rank is not None and device.type == "cuda" and parse_device(text) in ("auto", "cuda"):
        return resolve_device(f"cuda:{local_rank}")
    return device


def use_device(device: torch.device) -> None:
    """Make ``device`` the current CUDA device, so that nothing (pinned memory, a context, a
    stray ``.cuda()``) lands on GPU 0 when another was asked for. No-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


@dataclass(frozen=True)
class Hardware:
    """What a run ran on, recorded beside its outputs."""

    device: str  # "cpu" or "cuda"
    gpu: str = ""
    capability: str = ""  # "8.0"
    torch_cuda: str = ""
    cudnn: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"device": self.device, "gpu": self.gpu, "capability": self.capability,
                "torch_cuda": self.torch_cuda, "cudnn": self.cudnn}

    def describe(self) -> str:
        if self.device == "cpu":
            return "the CPU"
        return f"{self.gpu} (compute capability {self.capability}, CUDA {self.torch_cuda}, cuDNN {self.cudnn})"


def hardware(device: torch.device) -> Hardware:
    if device.type != "cuda":
        return Hardware("cpu")
    major, minor = torch.cuda.get_device_capability(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return Hardware("cuda", torch.cuda.get_device_name(device), f"{major}.{minor}", str(torch.version.cuda or ""),
                    str(cudnn or ""))


def has_native_bf16(device: torch.device) -> bool:
    """bf16 in hardware: every CPU torch runs on emulates or has it; on CUDA, capability 8.0+.
    (``torch.cuda.is_bf16_supported()`` is also true on a T4, where it is emulated and cuDNN has
    no bf16 convolutions.)"""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= NATIVE_BF16


def choose_precision(requested: str, device: torch.device, training: bool = False) -> str:
    """The precision a run uses: ``requested``, checked against the device, or for 'auto' fp32
    on the CPU and on CUDA fp16 (embedding) or bf16 where native, else fp16 (training)."""
    if requested != "auto" and requested not in PRECISIONS:
        raise InputError(f"unknown precision {requested!r}; use auto or one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if training and has_native_bf16(device) else "fp16"
    if requested == "fp16" and device.type != "cuda":
        raise InputError("fp16 needs a CUDA device; on the CPU use fp32 or bf16")
    if requested == "bf16" and not has_native_bf16(device):
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        raise InputError(f"{name} (compute capability {major}.{minor}) has no native bf16 (8.0 and up have it); "
                         "use --precision fp16 or auto")
    return requested


@contextlib.contextmanager
def reporting_out_of_memory(batch_size: int, remedy: str) -> Iterator[None]:
    """CUDA's out-of-memory error as one line naming the batch size and what to do."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise OutOfMemory(f"the GPU ran out of memory at --batch-size {batch_size}; {remedy}") from None


@contextlib.contextmanager
def full_fp32(device: torch.device, precision: str) -> Iterator[None]:
    """fp32 on CUDA as fp32: cuDNN runs convolutions (a ViT's patch embedding) in TF32 unless
    told not to. Restored afterwards; no-op on the CPU and under autocast."""
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
