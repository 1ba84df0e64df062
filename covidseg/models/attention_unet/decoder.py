"""U-Net decoder with additive attention gates (Oktay et al., 2018): each skip connection is
weighted by a gate computed from the coarser decoder features before it is concatenated."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class AttentionGate(nn.Module):
    """alpha = sigmoid(psi(relu(W_g g + W_x x))); returns x * alpha (and keeps alpha to inspect)."""

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int):
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(gate_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels))
        self.w_x = nn.Sequential(nn.Conv2d(skip_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels))
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.last_alpha: torch.Tensor | None = None

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        alpha = self.psi(F.relu(self.w_g(g) + self.w_x(x), inplace=True))
        self.last_alpha = alpha.detach()
        return x * alpha


class AttentionDecoderBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.gate = AttentionGate(in_channels, skip_channels, max(1, skip_channels // 2)) \
            if skip_channels else None
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, height: int, width: int, skip: torch.Tensor | None = None):
        x = F.interpolate(x, size=(height, width), mode="nearest")
        if skip is not None and self.gate is not None:
            x = torch.cat([x, self.gate(x, skip)], dim=1)
        return self.conv2(self.conv1(x))


class AttentionUnetDecoder(nn.Module):
    def __init__(self, encoder_channels, decoder_channels=(256, 128, 64, 32, 16)):
        super().__init__()
        channels = list(encoder_channels[1:])[::-1]  # from the deepest stage up
        head, skips = channels[0], channels[1:] + [0]
        in_chs = [head] + list(decoder_channels[:-1])
        self.blocks = nn.ModuleList(AttentionDecoderBlock(i, s, o)
                                    for i, s, o in zip(in_chs, skips, decoder_channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        shapes = [f.shape[2:] for f in features][::-1]
        feats = features[1:][::-1]
        x, skips = feats[0], feats[1:]
        for i, block in enumerate(self.blocks):
            h, w = shapes[i + 1]
            x = block(x, h, w, skips[i] if i < len(skips) else None)
        return x
