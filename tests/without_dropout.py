"""``python tests/without_dropout.py ARGS``: the cxrprobe CLI with every dropout layer an
identity, so that a run on two processes and a run on one draw nothing apart and can be
compared step for step (the multi-process adapt tests launch it under torchrun)."""

import runpy
import sys

import torch.nn as nn

nn.Dropout.forward = lambda self, x: x
sys.argv = ["cxrprobe", *sys.argv[1:]]
runpy.run_module("cxrprobe", run_name="__main__")
