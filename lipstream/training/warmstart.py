"""Start training from an exported model's weights (fine-tuning) instead of from random ones.

The exported graph folds each block's BatchNorm into its convolution, so the blocks' weights come
back as plain convolutions (in block order) and their norms are set to the identity; `freeze_norms`
keeps those norms out of training (batch statistics would undo the folded scale).
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipstream.engine.constants import HOP_MS
from lipstream.errors import ModelError
from lipstream.training.model import MotionNet

NAMED_PREFIX = "net."  # WindowMotionNet wraps the MotionNet as `net`


def load_exported(net: MotionNet, path: Path) -> None:
    """Copy the weights of an exported .onnx into `net`; its dimensions must be the same."""
    import onnx
    from onnx import numpy_helper

    from lipstream.engine.runners import read_metadata

    _check_layout(read_metadata(path), net, path)  # a missing, non-ONNX or foreign file: refused too
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    named = {k[len(NAMED_PREFIX):]: v for k, v in weights.items() if k.startswith(NAMED_PREFIX)}
    folded = [v for k, v in weights.items() if not k.startswith(NAMED_PREFIX)]  # (weight, bias) per block
    state = net.state_dict()
    for i, block in enumerate(net.blocks):
        named[f"blocks.{i}.conv.weight"], named[f"blocks.{i}.conv.bias"] = folded[2 * i], folded[2 * i + 1]
        norm: nn.BatchNorm1d = block.norm
        named[f"blocks.{i}.norm.running_var"] = np.full(norm.num_features, 1 - norm.eps, np.float32)
        for key, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0)):
            named[f"blocks.{i}.norm.{key}"] = np.full(norm.num_features, value, np.float32)
    for key, tensor in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key not in named or tuple(named[key].shape) != tuple(tensor.shape):
            raise ModelError(f"{path} does not fit this model at {key}: export it with the same "
                             "--channels, --dilations, --context-ms and --lookahead-ms")
        state[key] = torch.from_numpy(np.array(named[key]))
    net.load_state_dict(state)


def _check_layout(meta: dict[str, Any], net: MotionNet, path: Path) -> None:
    """Same window split and dilations: weights of the same shapes can still mean another model
    (context 200 + lookahead 80 ms has the shapes of 240 + 40; dilations 2 1 4 2 those of 1 2 2 4)."""
    model = meta.get("model", {})
    theirs = (meta["context_frames"], meta["lookahead_frames"], tuple(model.get("dilations", ())))
    ours = (net.config.context_frames, net.config.lookahead_frames, net.config.dilations)
    if theirs != ours:
        raise ModelError(f"{path} was trained with --context-ms {theirs[0] * HOP_MS} --lookahead-ms "
                         f"{theirs[1] * HOP_MS} --dilations {' '.join(map(str, theirs[2]))}: fine-tune it "
                         "with the same options")


def freeze_norms(net: nn.Module) -> None:
    """Keep every BatchNorm on its stored statistics while the rest trains (call after net.train())."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eval()
