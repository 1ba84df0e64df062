"""The 2D twin of the Models Genesis UNet3D (Zhou et al.), so that its released 3D weights can be
flattened into it: the same blocks under the same names (``down_tr64/128/256/512``,
``up_tr256/128/64``, ``out_tr.final_conv``), with 2D convolutions.

Split like every covidseg network: ``encoder`` (the four down transitions), ``decoder`` (the
three up transitions) and ``segmentation_head`` (the final 1×1 convolution, returning logits: the
released model's sigmoid is applied by the loss instead).  Input sides must be multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn

from covidseg.models.network import NetworkTraits


class LUConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activation(self.bn1(self.conv1(x)))


def two_convs(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(LUConv(cin, mid), LUConv(mid, cout))


class DownTransition(nn.Module):
    def __init__(self, cin: int, depth: int):
        super().__init__()
        width = 32 * 2 ** depth
        self.ops = two_convs(cin, width, 2 * width)
        self.pool = depth < 3

    def forward(self, x):
        skip = self.ops(x)
        return (nn.functional.max_pool2d(skip, 2) if self.pool else skip), skip


class UpTransition(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int):
        super().__init__()
        width = 32 * 2 ** (depth + 1)
        self.up_conv = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.ops = two_convs(cin + cout // 2, width, width)

    def forward(self, x, skip):
        return self.ops(torch.cat([self.up_conv(x), skip], dim=1))


class GenesisEncoder(nn.Module):
    out_channels = (64, 128, 256, 512)

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.down_tr64 = DownTransition(in_channels, 0)
        self.down_tr128 = DownTransition(64, 1)
        self.down_tr256 = DownTransition(128, 2)
        self.down_tr512 = DownTransition(256, 3)

    def forward(self, x):
        skips = []
        for stage in (self.down_tr64, self.down_tr128, self.down_tr256, self.down_tr512):
            x, skip = stage(x)
            skips.append(skip)
        return skips  # [64@1, 128@1/2, 256@1/4, 512@1/8]


class GenesisDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up_tr256 = UpTransition(512, 512, 2)
        self.up_tr128 = UpTransition(256, 256, 1)
        self.up_tr64 = UpTransition(128, 128, 0)

    def forward(self, skips):
        s64, s128, s256, x = skips
        x = self.up_tr256(x, s256)
        x = self.up_tr128(x, s128)
        return self.up_tr64(x, s64)


class GenesisUnet(nn.Module):
    """2D U-Net with the Models Genesis layout; forward returns logits."""

    requires_divisible_input_shape = True

    def __init__(self, in_channels: int = 1, classes: int = 1):
        super().__init__()
        self.encoder = GenesisEncoder(in_channels)
        self.decoder = GenesisDecoder()
        self.segmentation_head = nn.Conv2d(64, classes, kernel_size=1)
        self.traits = NetworkTraits(classes=classes, stride=8)  # three poolings

    def forward(self, x):
        return self.segmentation_head(self.decoder(self.encoder(x)))
