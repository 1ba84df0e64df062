"""Where a network's parts are, found by running it rather than by how a family lists its
children: the encoder's resolution levels (a module belongs to the level of the first feature
map computed after it ran: one forward pass with hooks), the decoder's last block, and the
fewest module names that cover a set of them (for the run log).  :mod:`covidseg.models.surgery`
freezes and re-initialises what these find."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from covidseg.base.errors import ConfigError, first_line

NORM = nn.modules.batchnorm._NormBase


def parameter_owners(root: nn.Module, prefix: str) -> dict[str, nn.Module]:
    """Modules of ``root`` that own parameters or norm statistics themselves, by qualified name."""
    return {f"{prefix}.{n}".rstrip("."): m for n, m in root.named_modules()
            if any(True for _ in m.parameters(recurse=False)) or isinstance(m, NORM)}


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
             for m in root.modules() if isinstance(m, NORM) and m.running_mean is not None}
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
    owners = parameter_owners(enc, "encoder")
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
    owners = parameter_owners(root, prefix)
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
