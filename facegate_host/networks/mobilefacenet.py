"""MobileFaceNet (Chen et al. 2018) as a PyTorch module, to export a checkpoint to ONNX.

Only the install step imports this (it needs torch); the appliance runs the exported ONNX.
Layer names follow the CASIA-WebFace checkpoint in the model mirror, so its state dict loads
strictly: a missing or extra tensor is an error, never a silently random layer.
"""

import torch
from torch import nn

# (expansion, output channels, repeats, first stride) per bottleneck stage, from the paper
STAGES = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]


class ConvUnit(nn.Module):
    def __init__(self, inputs, outputs, kernel, stride, padding, depthwise=False, linear=False):
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride, padding, groups=inputs if depthwise else 1,
                              bias=False)
        self.bn = nn.BatchNorm2d(outputs)
        self.linear = linear
        if not linear:
            self.prelu = nn.PReLU(outputs)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x if self.linear else self.prelu(x)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, inputs, outputs, stride, expansion):
        super().__init__()
        self.residual = stride == 1 and inputs == outputs
        hidden = inputs * expansion
        self.conv = nn.Sequential(
            nn.Conv2d(inputs, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, outputs, 1, 1, 0, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


def bottleneck_stages(block, channels: int = 64) -> nn.Sequential:
    """The paper's bottleneck stages built from `block(inputs, outputs, stride, expansion)`."""
    blocks = []
    for expansion, outputs, repeats, stride in STAGES:
        for number in range(repeats):
            blocks.append(block(channels, outputs, stride if number == 0 else 1, expansion))
            channels = outputs
    return nn.Sequential(*blocks)


class MobileFaceNet(nn.Module):
    def __init__(self, height=112, width=96, embedding_size=128):
        super().__init__()
        self.conv1 = ConvUnit(3, 64, 3, 2, 1)
        self.dw_conv1 = ConvUnit(64, 64, 3, 1, 1, depthwise=True)
        self.blocks = bottleneck_stages(Bottleneck)
        self.conv2 = ConvUnit(128, 512, 1, 1, 0)
        # global depthwise convolution over the final 7x6 (for 112x96) map instead of pooling
        self.linear7 = ConvUnit(512, 512, (height // 16, width // 16), 1, 0, depthwise=True, linear=True)
        self.linear1 = ConvUnit(512, embedding_size, 1, 1, 0, linear=True)

    def forward(self, x):
        x = self.blocks(self.dw_conv1(self.conv1(x)))
        x = self.linear1(self.linear7(self.conv2(x)))
        return torch.flatten(x, 1)
