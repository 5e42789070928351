"""kiln's model-zoo CNN (models/zoo/resnet_cnn.h) in torch.nn, with the same module names,
so its state_dict has kiln's keys ("block2.shortcut.0.weight", "stem_bn.running_mean", ...)
and a safetensors file of either side loads into the other with strict=True.

Used by the PyTorch round-trip test (tests/interop/resnet_cnn_torch.py) and by the
benchmark against PyTorch (tools/bench_vs_torch.py); the test is what shows that this
definition and kiln's compute the same function.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut: 1x1 conv + BN when the
    stride or the channel count changes, else the identity (no module, as in kiln)."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def resnet_cnn(width=16, in_channels=1, num_classes=10):
    """The model with kiln's initialisation rule (conv weights kaiming_normal(fan_out, relu),
    Linear PyTorch's default, BN weight 1 and bias 0); the numbers differ from kiln's, whose
    generator is Philox, not torch's."""
    w = width
    model = nn.Sequential(OrderedDict([
        ("stem", nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)),
        ("stem_bn", nn.BatchNorm2d(w)),
        ("stem_relu", nn.ReLU()),
        ("block1", BasicBlock(w, w, 1)),
        ("block2", BasicBlock(w, 2 * w, 2)),
        ("block3", BasicBlock(2 * w, 4 * w, 2)),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * w, num_classes)),
    ]))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
