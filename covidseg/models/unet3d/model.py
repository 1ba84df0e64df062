"""A small 3D U-Net for the coarse, low-resolution 3D segmentation (bounding boxes for
pseudo-labelling).  Same split as the 2D models: ``encoder``, ``decoder``, ``segmentation_head``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from covidseg.models.network import NetworkTraits


def block3d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True))


class Encoder3d(nn.Module):
    def __init__(self, in_channels: int, widths):
        super().__init__()
        self.stages = nn.ModuleList(block3d(c_in, c_out) for c_in, c_out in
                                    zip([in_channels, *widths[:-1]], widths))
        self.out_channels = list(widths)

    def forward(self, x):
        feats = []
        for i, stage in enumerate(self.stages):
            if i:
                # pool in-plane always, along z only while there are slices to pool
                x = F.max_pool3d(x, (2 if x.shape[2] >= 2 else 1, 2, 2))
            x = stage(x)
            feats.append(x)
        return feats


class Decoder3d(nn.Module):
    def __init__(self, widths):
        super().__init__()
        rev = list(widths)[::-1]
        self.blocks = nn.ModuleList(block3d(a + b, b) for a, b in zip(rev[:-1], rev[1:]))

    def forward(self, feats):
        x = feats[-1]
        for block, skip in zip(self.blocks, feats[::-1][1:]):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


class UNet3D(nn.Module):
    """Works on whole volumes resampled in-plane to ``coarse_size`` pixels (slices unchanged)."""

    coarse_size = 64

    def __init__(self, in_channels: int = 1, classes: int = 1, widths=(8, 16, 32, 64)):
        super().__init__()
        self.encoder = Encoder3d(in_channels, widths)
        self.decoder = Decoder3d(widths)
        self.segmentation_head = nn.Conv3d(widths[0], classes, 1)
        self.traits = NetworkTraits(classes=classes, volumetric=True,
                                    coarse_size=self.coarse_size)

    def forward(self, x):
        return self.segmentation_head(self.decoder(self.encoder(x)))
