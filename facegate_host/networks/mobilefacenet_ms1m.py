"""MobileFaceNet as trained on MS1M (`mobilefacenet_ms1m.pth`), a PyTorch module for its export.

Written here from the checkpoint's own tensor names and shapes (307 tensors; a strict load
refuses any mismatch): the same bottleneck stages as the paper, ReLU6 in the convolution
blocks and ReLU in the separable stem (the checkpoint has no PReLU weights; this choice gives
the LFW figures MODELS.md records, 99.50%, where ReLU everywhere gives 99.47%), a global 7x7 depthwise convolution, then a
1x1 projection with bias and a final batch norm. Input 112x112, full width. Only the install
step imports this; the appliance runs the exported ONNX.
"""

import torch
from torch import nn

from facegate_host.networks.mobilefacenet import bottleneck_stages


def conv_bn_relu(inputs: int, outputs: int, kernel: int, stride: int = 1, depthwise: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=inputs if depthwise else 1, bias=False),
        nn.BatchNorm2d(outputs), nn.ReLU6(inplace=True))


class SeparableStem(nn.Module):
    """3x3 depthwise then 1x1 pointwise, each with its batch norm and ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn2(self.pointwise(self.relu(self.bn1(self.depthwise(x))))))


class InvertedResidual(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inputs * expansion
        self.residual = stride == 1 and inputs == outputs
        self.conv = nn.Sequential(conv_bn_relu(inputs, hidden, 1), conv_bn_relu(hidden, hidden, 3, stride, True),
                                  nn.Conv2d(hidden, outputs, 1, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class GlobalDepthwise(nn.Module):
    """A 7x7 depthwise convolution over the final 7x7 map: a learned, per-channel pooling."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(self.depthwise(x))


class MobileFaceNetMS1M(nn.Module):
    def __init__(self, embedding_size: int = 128) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(3, 64, 3, 2)
        self.dw_conv = SeparableStem(64)
        self.features = bottleneck_stages(InvertedResidual)
        self.conv2 = conv_bn_relu(128, 512, 1)
        self.gdconv = GlobalDepthwise(512)
        self.conv3 = nn.Conv2d(512, embedding_size, 1)
        self.bn = nn.BatchNorm2d(embedding_size)

    def forward(self, x):
        x = self.conv2(self.features(self.dw_conv(self.conv1(x))))
        return torch.flatten(self.bn(self.conv3(self.gdconv(x))), 1)
