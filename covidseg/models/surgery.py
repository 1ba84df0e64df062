"""Transfer-learning strategies: which weights train, which are re-initialised (thesis 5.2).

* ``all`` — fine-tune everything; re-initialise the **last decoder block and the segmentation
  head** (the thesis: "the last block of convolutional layers was reinitialized");
* ``decoder`` — freeze the whole encoder (every resolution level);
* ``freeze-encoder-half`` — freeze the **first ⌈L/2⌉ of the encoder's L resolution levels** and
  re-initialise the segmentation head (the output layer).

**Resolution levels.** An encoder returns one feature map per level (smp: ``out_channels``, the
input itself first, then strides 2, 4, …, 2^depth; the Genesis U-Net: strides 1, 2, 4, 8). A
module belongs to the level of the first feature map computed after it ran: found by one forward
pass with hooks, so the answer depends on depth, never on how an encoder family happens to list
its children. ResNet (depth 5): level 1 = ``conv1``/``bn1``, 2 = ``layer1``, 3 = ``layer2``,
4 = ``layer3``, 5 = ``layer4``; "half" freezes levels 1-3. The rule for an odd L is stated once,
here: the first ⌈L/2⌉ levels.

**Frozen normalisation.** Freezing only ``requires_grad`` would let BatchNorm statistics drift
(the classic transfer-learning leak), so frozen norm layers are pinned to eval mode. Pinned
statistics must normalise: pretrained ones are kept; fresh ones (mean 0, variance 1, never
updated — e.g. a Models Genesis init, whose released model has none) are re-estimated on the
target's training slices before freezing, when the caller passes them (``calibration``).
"""

from __future__ import annotations

import logging
import math
import types
from collections.abc import Callable, Iterable

import torch
from torch import nn

from covidseg.base.errors import ConfigError
from covidseg.models.levels import (
    NORM,
    compact_names,
    encoder_levels,
    last_decoder_block,
    parameter_owners,
)
from covidseg.models.vocabulary import Strategy

log = logging.getLogger(__name__)

STRATEGIES = Strategy.values()


def _pin_eval(module: nn.Module) -> None:
    """Keep a norm layer in eval mode whatever ``model.train()`` later says."""
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: self, module)


def freeze(modules) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad = False
        for sub in m.modules():
            if isinstance(sub, NORM):
                _pin_eval(sub)




_WEIGHTED = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def reinitialise(module: nn.Module, prefix: str, head: bool = False) -> list[str]:
    """Fresh weights, drawn as a newly built network draws them: convolutions He-uniform (fan in,
    ReLU) in a decoder block, Xavier-uniform in the head, biases 0; norm layers weight 1, bias 0,
    statistics reset."""
    names = []
    for name, m in module.named_modules():
        if isinstance(m, _WEIGHTED):
            if head:
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM) or (hasattr(m, "reset_parameters")
                                      and any(True for _ in m.parameters(recurse=False))):
            m.reset_parameters()
        else:
            continue
        names.append(f"{prefix}.{name}".rstrip("."))
    return names


def reinit_head(model: nn.Module) -> list[str]:
    return reinitialise(model.segmentation_head, "segmentation_head", head=True)


def has_fresh_statistics(norm: nn.Module) -> bool:
    """Mean 0, variance 1 and never updated: statistics that describe no data."""
    if getattr(norm, "running_mean", None) is None:
        return False
    return (int(norm.num_batches_tracked) == 0 and not norm.running_mean.any()
            and bool(torch.all(norm.running_var == 1)))


def reestimate_statistics(model: nn.Module, norms: list[nn.Module],
                          batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate ``norms``' running statistics (cumulative average) over ``batches`` of the
    target's images, everything else in eval mode; returns the number of images seen."""
    modes = {m: m.training for m in model.modules()}
    momenta = {}
    for m in norms:
        m.reset_running_stats()
        momenta[m], m.momentum = m.momentum, None
    seen = 0
    p = next(model.parameters())
    try:
        nn.Module.train(model, False)
        for m in norms:
            nn.Module.train(m, True)
        with torch.no_grad():
            for x in batches:
                model.encoder(x.to(p.device, p.dtype))
                seen += len(x)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, momentum in momenta.items():
            m.momentum = momentum
    return seen


def apply_strategy(model: nn.Module, strategy: str,
                   calibration: Callable[[], Iterable[torch.Tensor]] | None = None,
                   pretrained: bool = True) -> dict:
    """Apply a strategy in place; returns what was frozen and re-initialised (for the run log).

    ``calibration()`` yields batches of the target's training images; it is called only when a
    layer about to be frozen has fresh normalisation statistics. A network that is not
    ``pretrained`` (init scratch) is fresh already: nothing is re-initialised."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
    report = {"strategy": strategy, "frozen": [], "reinitialised": [], "levels": []}
    if hasattr(model, "encoder") and strategy != "all":
        report.update(_freeze_encoder(model, strategy, calibration))
    if strategy == "all" and pretrained:
        for name, module in last_decoder_block(model):
            report["reinitialised"] += reinitialise(module, name)
    if strategy != "decoder" and pretrained and hasattr(model, "segmentation_head"):
        report["reinitialised"] += reinit_head(model)
    report["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["total_parameters"] = sum(p.numel() for p in model.parameters())
    return report


def _freeze_encoder(model: nn.Module, strategy: str,
                    calibration: Callable[[], Iterable[torch.Tensor]] | None) -> dict:
    """Freeze the encoder (``decoder``) or its first ⌈L/2⌉ resolution levels; what it froze."""
    # the whole encoder needs no levels (and works for encoders whose levels cannot be told);
    # levels that hold weights (not a 0-channel placeholder, not a lone pooling step)
    levels = [lv for lv in encoder_levels(model) if lv["modules"]] \
        if strategy != "decoder" else []
    for i, lv in enumerate(levels):
        lv["level"] = i + 1
    n_frozen = len(levels) if strategy == "decoder" else math.ceil(len(levels) / 2)
    frozen = {n: m for lv in levels[:n_frozen] for n, m in lv["modules"].items()}
    if strategy == "decoder":
        frozen.update(parameter_owners(model.encoder, "encoder"))
    enc_params = sum(p.numel() for p in model.encoder.parameters())
    report = {"levels": [{
        "level": lv["level"], "frozen": lv["level"] <= n_frozen,
        "modules": compact_names(set(lv["modules"]), model.encoder, "encoder"),
        "parameters": sum(p.numel() for m in lv["modules"].values()
                          for p in m.parameters(recurse=False))} for lv in levels]}
    report["norm_statistics"] = _settle_statistics(model, frozen.values(), calibration)
    frozen_params = sum(p.numel() for m in frozen.values() for p in m.parameters(recurse=False))
    freeze(frozen.values())
    report["frozen"] = compact_names(set(frozen), model.encoder, "encoder")
    if levels:
        report["frozen_levels"], report["encoder_levels"] = n_frozen, len(levels)
    report["frozen_encoder_fraction"] = round(frozen_params / max(1, enc_params), 6)
    return report


def _settle_statistics(model: nn.Module, frozen, calibration) -> str:
    """Re-estimate the fresh statistics of the norm layers about to be frozen (when
    ``calibration`` gives data); what became of them, for the report."""
    norms = [m for m in frozen if isinstance(m, NORM)]
    fresh = [m for m in norms if has_fresh_statistics(m)]
    if fresh and calibration is not None:
        seen = reestimate_statistics(model, fresh, calibration())
        return (f"{len(fresh)} of {len(norms)} frozen norm layers had no "
                f"statistics: re-estimated on {seen} training slices")
    if fresh:
        log.warning("%d frozen norm layers have fresh statistics (mean 0, var 1) and no data "
                    "was given to re-estimate them", len(fresh))
        return f"{len(fresh)} of {len(norms)} frozen norm layers fresh"
    return f"{len(norms)} frozen norm layers keep their statistics"
