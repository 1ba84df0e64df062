"""Transfer-learning strategies: which weights train, which are re-initialised (thesis 5.2).

* ``all`` — fine-tune everything; re-initialise the segmentation head;
* ``decoder`` — freeze the whole encoder (smp's ``freeze_encoder()``: parameters *and* the
  normalisation layers' running statistics, which ``model.train()`` then leaves alone);
* ``freeze-encoder-half`` — freeze the first half of the encoder's stages the same way and
  re-initialise the output layer.

Freezing only ``requires_grad`` would let BatchNorm statistics drift (the classic transfer-learning
leak), so frozen norm layers are pinned to eval mode.
"""

from __future__ import annotations

import types

from torch import nn

from covidseg.errors import ConfigError

STRATEGIES = ("all", "decoder", "freeze-encoder-half")


def _pin_eval(module: nn.Module) -> None:
    """Keep a norm layer in eval mode whatever ``model.train()`` later says."""
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: self, module)


def freeze(modules) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad = False
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._NormBase):
                _pin_eval(sub)


def encoder_stages(model: nn.Module) -> list[nn.Module]:
    """The encoder's top-level children that hold parameters, in forward order."""
    enc = model.encoder
    stages = getattr(enc, "stages", None)
    children = list(stages) if isinstance(stages, nn.ModuleList) else list(enc.children())
    return [c for c in children if any(True for _ in c.parameters())]


def reinit_head(model: nn.Module) -> list[str]:
    names = []
    for name, m in model.segmentation_head.named_modules():
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False)):
            m.reset_parameters()
            names.append(f"segmentation_head.{name}".rstrip("."))
    return names


def apply_strategy(model: nn.Module, strategy: str) -> dict:
    """Apply a strategy in place; returns what was frozen and re-initialised (for the run log)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
    report = {"strategy": strategy, "frozen": [], "reinitialised": []}
    if strategy == "decoder":
        if hasattr(model, "freeze_encoder"):
            model.freeze_encoder()
        else:
            freeze([model.encoder])
        report["frozen"] = ["encoder"]
    elif strategy == "freeze-encoder-half":
        stages = encoder_stages(model)
        half = stages[: len(stages) // 2]
        freeze(half)
        report["frozen"] = [f"encoder stage {i}" for i in range(len(half))]
        report["reinitialised"] = reinit_head(model)
    else:
        report["reinitialised"] = reinit_head(model)
    report["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["total_parameters"] = sum(p.numel() for p in model.parameters())
    return report
