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

from covidseg.errors import ConfigError, first_line
from covidseg.models.vocabulary import Strategy

log = logging.getLogger(__name__)

STRATEGIES = Strategy.values()
_NORM = nn.modules.batchnorm._NormBase


def _pin_eval(module: nn.Module) -> None:
    """Keep a norm layer in eval mode whatever ``model.train()`` later says."""
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: self, module)


def freeze(modules) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad = False
        for sub in m.modules():
            if isinstance(sub, _NORM):
                _pin_eval(sub)


def _owners(root: nn.Module, prefix: str) -> dict[str, nn.Module]:
    """Modules of ``root`` that own parameters or norm statistics themselves, by qualified name."""
    return {f"{prefix}.{n}".rstrip("."): m for n, m in root.named_modules()
            if any(True for _ in m.parameters(recurse=False)) or isinstance(m, _NORM)}


def _probe_input(model: nn.Module, size: int = 128) -> torch.Tensor:
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    channels = first.in_channels if first is not None else 1
    p = next(model.parameters())
    shape = (2, channels, size // 2, size, size) if isinstance(first, nn.Conv3d) else \
        (2, channels, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)


def _outputs(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [o for o in out if isinstance(o, torch.Tensor)]
    return []


def _run_with_hooks(root: nn.Module, modules: dict[str, nn.Module], call: Callable):
    """Run ``call()`` recording, for each module of ``modules``, when its forward first ended
    (a counter over all of them) and the tensors it returned; state of ``root`` left as it was."""
    order: list[tuple[str, list]] = []

    def hook(mod, inp, out, name):
        # a module that hands its input back (identity, padding, in-place activation) makes nothing
        ins = {id(t) for t in _outputs(inp)}
        order.append((name, [o for o in _outputs(out) if id(o) not in ins]))

    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: hook(mod, inp, out, n))
             for n, m in modules.items()]
    modes = {m: m.training for m in root.modules()}
    norms = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in root.modules() if isinstance(m, _NORM) and m.running_mean is not None}
    try:
        nn.Module.train(root, False)
        with torch.no_grad():
            result = call()
    except RuntimeError as exc:
        raise ConfigError(f"{type(root).__name__}: a probe forward pass failed "
                          f"({first_line(exc, 160)})") from exc
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
        for m, (mean, var, count) in norms.items():
            m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
    return order, result


def encoder_levels(model: nn.Module) -> list[dict]:
    """The encoder's resolution levels in forward order: ``{"level", "modules"}`` where
    ``modules`` maps the parameter-owning modules' qualified ``encoder.…`` names to them."""
    enc = model.encoder
    owners = _owners(enc, "encoder")
    watched = {f"encoder.{n}": m for n, m in enc.named_modules()
               if n and not isinstance(m, (nn.ModuleList, nn.ModuleDict))}
    x = _probe_input(model)
    order, features = _run_with_hooks(enc, watched, lambda: enc(x))
    ended: dict[str, int] = {}
    for i, (name, _) in enumerate(order):
        ended.setdefault(name, i)
    boundaries, unmatched = [], []
    for f in features:
        if f is x:
            continue  # smp's level 0 is the input itself
        # the module that made it: not a container that returns several feature maps at once
        # (timm's features_only model, the encoder's own wrapper)
        hits = [i for i, (_, outs) in enumerate(order) if any(o is f for o in outs)
                and sum(any(o is g for o in outs) for g in features) == 1]
        if not hits and f.shape[1] > 0:
            unmatched.append(len(boundaries) + 1)
        boundaries.append(hits[-1] if hits else (boundaries[-1] if boundaries else -1))
    if not boundaries or unmatched:
        raise ConfigError(f"{type(enc).__name__}: cannot tell the encoder's resolution levels "
                          f"(feature maps {unmatched or 'none'} are not returned by a module)")
    levels = [{"level": i + 1, "modules": {}} for i in range(len(boundaries))]
    for name, module in owners.items():
        at = ended.get(name)
        if at is None:  # never ran (e.g. a pruned classifier): attach to the last level
            k = len(levels) - 1
        else:
            k = next((j for j, b in enumerate(boundaries) if at <= b), len(levels) - 1)
        levels[k]["modules"][name] = module
    return levels


def compact_names(selected: set[str], root: nn.Module, prefix: str) -> list[str]:
    """The fewest module names whose parameter owners are exactly ``selected`` (for the run log)."""
    owners = _owners(root, prefix)
    out = []
    for n, _ in root.named_modules():
        name = f"{prefix}.{n}".rstrip(".")
        inside = [o for o in owners if o == name or o.startswith(name + ".")]
        if inside and all(o in selected for o in inside) and not any(
                name.startswith(c + ".") for c in out):
            out.append(name)
    return out


def last_decoder_block(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The decoder's last block to run (``blocks[-1]`` of smp's U-Net, ``up_tr64`` of Genesis);
    for a flat decoder of bare layers (DeepLabV3: aspp, conv, bn, relu) the layers from its last
    convolution on. Returns ``[(name, module), …]``."""
    dec = getattr(model, "decoder", None)
    if dec is None:
        return []
    candidates = {}
    for n, child in dec.named_children():
        items = child.named_children() if isinstance(child, (nn.ModuleList, nn.ModuleDict)) \
            else [("", child)]
        for k, m in items:
            if any(True for _ in m.parameters()):
                candidates[f"decoder.{n}.{k}".rstrip(".")] = m
    if not candidates:
        return []
    order, _ = _run_with_hooks(model, candidates, lambda: model(_probe_input(model)))
    ran = list(dict.fromkeys(n for n, _ in order))
    convs = [n for n in ran if any(isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d))
                                   for m in candidates[n].modules())]
    if not convs:
        return []
    return [(n, candidates[n]) for n in ran[ran.index(convs[-1]):]]


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
        elif isinstance(m, _NORM) or (hasattr(m, "reset_parameters")
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
        # the whole encoder needs no levels (and works for encoders whose levels cannot be told)
        # levels that hold weights (not a 0-channel placeholder, not a lone pooling step)
        levels = [lv for lv in encoder_levels(model) if lv["modules"]] \
            if strategy != "decoder" else []
        for i, lv in enumerate(levels):
            lv["level"] = i + 1
        n_frozen = len(levels) if strategy == "decoder" else math.ceil(len(levels) / 2)
        frozen = {n: m for lv in levels[:n_frozen] for n, m in lv["modules"].items()}
        if strategy == "decoder":
            frozen.update(_owners(model.encoder, "encoder"))
        enc_params = sum(p.numel() for p in model.encoder.parameters())
        for lv in levels:
            lv_names = set(lv["modules"])
            report["levels"].append({
                "level": lv["level"], "frozen": lv["level"] <= n_frozen,
                "modules": compact_names(lv_names, model.encoder, "encoder"),
                "parameters": sum(p.numel() for m in lv["modules"].values()
                                  for p in m.parameters(recurse=False))})
        norms = [m for m in frozen.values() if isinstance(m, _NORM)]
        fresh = [m for m in norms if has_fresh_statistics(m)]
        if fresh and calibration is not None:
            seen = reestimate_statistics(model, fresh, calibration())
            report["norm_statistics"] = (f"{len(fresh)} of {len(norms)} frozen norm layers had no "
                                         f"statistics: re-estimated on {seen} training slices")
        elif fresh:
            log.warning("%d frozen norm layers have fresh statistics (mean 0, var 1) and no data "
                        "was given to re-estimate them", len(fresh))
            report["norm_statistics"] = f"{len(fresh)} of {len(norms)} frozen norm layers fresh"
        else:
            report["norm_statistics"] = f"{len(norms)} frozen norm layers keep their statistics"
        frozen_params = sum(p.numel() for m in frozen.values() for p in m.parameters(recurse=False))
        freeze(frozen.values())
        report["frozen"] = compact_names(set(frozen), model.encoder, "encoder")
        if levels:
            report["frozen_levels"], report["encoder_levels"] = n_frozen, len(levels)
        report["frozen_encoder_fraction"] = round(frozen_params / max(1, enc_params), 6)
    if strategy == "all" and pretrained:
        for name, module in last_decoder_block(model):
            report["reinitialised"] += reinitialise(module, name)
    if strategy != "decoder" and pretrained and hasattr(model, "segmentation_head"):
        report["reinitialised"] += reinit_head(model)
    report["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["total_parameters"] = sum(p.numel() for p in model.parameters())
    return report
