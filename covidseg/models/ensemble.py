"""An ensemble of networks of one architecture that behaves as one network (``cv=K``: the K fold
models of a cross-validation run).

Its output is the *logit of the members' mean probability* — ``log p − log(1 − p)`` for one
lesion channel, ``log p`` for a softmax over classes — so everything that turns a network's
logits into probabilities (validation, ``evaluate``, ``predict``, the pyfunc model, the
threshold sweep) gets exactly the mean of the members' probabilities, with no code of its own
for ensembles.  Saved like any covidseg network: one state dict (``members.0.…``,
``members.1.…``) and ``"members": K`` in its ``model.json``.
"""

from __future__ import annotations

import torch
from torch import nn

from covidseg.models.network import traits_of

# the mean probability is kept within [EPS, 1 - EPS] before its logit: sigmoid(±16.1) recovers it
EPS = 1e-7


class EnsembleNet(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)
        self.traits = traits_of(members[0])  # the members share one architecture

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [m(x).float() for m in self.members]
        if logits[0].shape[1] == 1:
            p = torch.stack([torch.sigmoid(v) for v in logits]).mean(0).clamp(EPS, 1 - EPS)
            return torch.log(p) - torch.log1p(-p)
        p = torch.stack([torch.softmax(v, dim=1) for v in logits]).mean(0)
        return torch.log(p.clamp_min(EPS))
