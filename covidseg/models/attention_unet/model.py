"""Attention U-Net: an smp encoder, the attention-gate decoder, smp's segmentation head — one
more architecture folder in the smp mould (``encoder`` / ``decoder`` / ``segmentation_head``,
``freeze_encoder()``), since smp has no Oktay attention gates."""

from __future__ import annotations

from segmentation_models_pytorch.base import SegmentationHead, SegmentationModel
from segmentation_models_pytorch.encoders import get_encoder

from covidseg.models.attention_unet.decoder import AttentionUnetDecoder
from covidseg.models.network import NetworkTraits


class AttentionUnet(SegmentationModel):
    requires_divisible_input_shape = True

    def __init__(self, encoder_name: str = "resnet34", encoder_depth: int = 5,
                 encoder_weights: str | None = None,
                 decoder_channels=(256, 128, 64, 32, 16), in_channels: int = 1, classes: int = 1):
        super().__init__()
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth,
                                   weights=encoder_weights)
        self.decoder = AttentionUnetDecoder(self.encoder.out_channels,
                                            tuple(decoder_channels[:encoder_depth]))
        self.segmentation_head = SegmentationHead(in_channels=decoder_channels[encoder_depth - 1],
                                                  out_channels=classes, kernel_size=3)
        self.classification_head = None
        self.name = f"attention-u-{encoder_name}"
        self.traits = NetworkTraits(classes=classes)
        self.initialize()
