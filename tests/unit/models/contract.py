"""What every architecture owes covidseg (smp's ``tests/models/base.py`` in spirit): a subclass
sets ``spec`` and ``shape`` (one input, batch first; 5 dimensions for a volumetric network) and
inherits the checks —

* the network declares its traits when built (:mod:`covidseg.models.network`): its classes, 3D or
  not, its stride or coarse size, which the inference functions read;
* the output has the input's spatial size and one channel per class;
* its weights come back exactly through the checkpoint format every stage saves (rebuilt from the
  spec, weights only);
* every transfer-learning strategy (:mod:`covidseg.models.surgery`) applies and leaves a network
  that still runs, with the encoder frozen where the strategy says.

Tiny inputs keep each check well under a second on the CPU."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from covidseg.inference import is_3d, output_classes, stride_of
from covidseg.models.checkpoint import load_model, save_model
from covidseg.models.factory import ModelSpec, build_model
from covidseg.models.network import Network, traits_of
from covidseg.models.surgery import STRATEGIES, apply_strategy


class ArchitectureContract:
    spec: ModelSpec
    shape: tuple
    strategies: tuple = STRATEGIES
    parts: tuple = ("encoder", "decoder", "segmentation_head")  # smp's mould

    _built: dict = {}  # spec -> network, built once per test session (a copy handed out)

    def build(self, **changes):
        spec = replace(self.spec, **changes)
        key = (type(self).__name__, repr(spec))
        if key not in self._built:
            self._built[key] = build_model(spec)
        return copy.deepcopy(self._built[key])

    def forward(self, model) -> torch.Tensor:
        torch.manual_seed(0)
        with torch.no_grad():
            return model.eval()(torch.randn(*self.shape))

    def test_traits_are_declared_when_built(self):
        model = self.build()
        assert isinstance(model, Network)
        assert all(hasattr(model, part) for part in self.parts)
        traits = traits_of(model)
        volumetric = len(self.shape) == 5
        assert (traits.volumetric, is_3d(model)) == (volumetric, volumetric)
        assert (traits.coarse_size > 0) == volumetric
        if not volumetric:
            assert stride_of(model) == traits.stride
            assert all(side % traits.stride == 0 for side in self.shape[2:])

    def test_output_has_the_input_size_and_a_channel_per_class(self):
        for classes in (1, 3):
            model = self.build(classes=classes)
            assert traits_of(model).classes == output_classes(model) == classes
            out = self.forward(model)
            assert out.shape == (self.shape[0], classes, *self.shape[2:])

    def test_weights_come_back_through_the_checkpoint(self, tmp_path):
        model = self.build()
        save_model(tmp_path / "m", model, self.spec, {})
        back, config = load_model(tmp_path / "m")
        assert config["model"] == self.spec.to_dict()
        assert traits_of(back) == traits_of(model)
        state = back.state_dict()
        assert set(state) == set(model.state_dict())
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    def test_every_strategy_applies_and_the_network_still_runs(self):
        for strategy in self.strategies:
            model = self.build()
            report = apply_strategy(model, strategy)
            assert report["trainable_parameters"] <= report["total_parameters"]
            if strategy == "decoder":
                assert not any(p.requires_grad for p in model.encoder.parameters())
                assert report["trainable_parameters"] < report["total_parameters"]
            out = self.forward(model)
            assert out.shape[2:] == self.shape[2:] and torch.isfinite(out).all()
