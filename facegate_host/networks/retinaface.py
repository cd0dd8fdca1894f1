"""RetinaFace with a MobileNet-0.25 backbone as a PyTorch module, to export a checkpoint to ONNX.

Only the install step imports this (it needs torch); the appliance runs the exported ONNX.
Module names follow the Pytorch_Retinaface state dict in the model mirror, so it loads
strictly. The export's outputs are boxes, landmarks and softmax scores over the SSD priors of
appliance.vision.geometry, the same contract as the seed's ONNX file.
"""

import torch
from torch import nn
from torch.nn import functional

ANCHORS_PER_CELL = 2


def conv_bn(inputs, outputs, kernel=3, stride=1, leaky=None, groups=1):
    """Convolution, batch norm, and a leaky ReLU unless `leaky` is None (a linear branch)."""
    layers = [nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(outputs)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def depthwise_separable(inputs, outputs, stride):
    return nn.Sequential(
        nn.Conv2d(inputs, inputs, 3, stride, 1, groups=inputs, bias=False), nn.BatchNorm2d(inputs),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(inputs, outputs, 1, 1, 0, bias=False), nn.BatchNorm2d(outputs),
        nn.LeakyReLU(0.1, inplace=True))


class MobileNetQuarter(nn.Module):
    """MobileNet v1 at width 0.25; the three stages feed the pyramid at strides 8, 16, 32."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, stride=2, leaky=0.1),
            depthwise_separable(8, 16, 1), depthwise_separable(16, 32, 2),
            depthwise_separable(32, 32, 1), depthwise_separable(32, 64, 2),
            depthwise_separable(64, 64, 1))
        self.stage2 = nn.Sequential(depthwise_separable(64, 128, 2),
                                    *[depthwise_separable(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(depthwise_separable(128, 256, 2), depthwise_separable(256, 256, 1))

    def forward(self, x):
        stride8 = self.stage1(x)
        stride16 = self.stage2(stride8)
        return stride8, stride16, self.stage3(stride16)


class Pyramid(nn.Module):
    """Top-down feature pyramid: coarser maps upsampled (nearest) and added to finer ones."""

    def __init__(self, channels=(64, 128, 256), width=64):
        super().__init__()
        self.output1, self.output2, self.output3 = (conv_bn(c, width, kernel=1, leaky=0.1) for c in channels)
        self.merge1 = conv_bn(width, width, leaky=0.1)
        self.merge2 = conv_bn(width, width, leaky=0.1)

    def forward(self, features):
        fine, middle, coarse = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        middle = self.merge2(middle + functional.interpolate(coarse, size=middle.shape[2:], mode="nearest"))
        fine = self.merge1(fine + functional.interpolate(middle, size=fine.shape[2:], mode="nearest"))
        return fine, middle, coarse


class ContextModule(nn.Module):
    """SSH context: 3x3, 5x5 and 7x7 receptive fields (stacked 3x3s) concatenated."""

    def __init__(self, width=64):
        super().__init__()
        quarter = width // 4
        self.conv3X3 = conv_bn(width, width // 2)
        self.conv5X5_1 = conv_bn(width, quarter, leaky=0.1)
        self.conv5X5_2 = conv_bn(quarter, quarter)
        self.conv7X7_2 = conv_bn(quarter, quarter, leaky=0.1)
        self.conv7x7_3 = conv_bn(quarter, quarter)

    def forward(self, x):
        branch5 = self.conv5X5_1(x)
        branch7 = self.conv7X7_2(branch5)
        return functional.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), self.conv7x7_3(branch7)], 1))


class Head(nn.Module):
    def __init__(self, values, width=64):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(width, ANCHORS_PER_CELL * values, 1)

    def forward(self, x):
        # anchors ordered row by row, then the two anchor sizes of a cell: the priors' order
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = MobileNetQuarter()
        self.fpn = Pyramid()
        self.ssh1, self.ssh2, self.ssh3 = ContextModule(), ContextModule(), ContextModule()
        self.ClassHead = nn.ModuleList([Head(2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([Head(4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([Head(10) for _ in range(3)])

    def forward(self, x):
        levels = self.fpn(self.body(x))
        levels = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        boxes = torch.cat([head(level) for head, level in zip(self.BboxHead, levels)], 1)
        landmarks = torch.cat([head(level) for head, level in zip(self.LandmarkHead, levels)], 1)
        scores = torch.cat([head(level) for head, level in zip(self.ClassHead, levels)], 1)
        return boxes, landmarks, functional.softmax(scores, dim=-1)
