"""The cross-validation ensemble: one network whose probabilities are the mean of its members',
saved and loaded like any covidseg model; test-time mirroring."""

import numpy as np
import torch

from covidseg.inference import predict_volume
from covidseg.models.checkpoint import load_model, save_model
from covidseg.models.ensemble import EnsembleNet
from covidseg.models.factory import ModelSpec, build_model

CPU = torch.device("cpu")


def _members(n=3, classes=1):
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(build_model(ModelSpec("unet", "resnet18", classes=classes)).eval())
    return nets


def test_the_ensemble_is_the_mean_of_its_members_probabilities(tmp_path):
    members = _members()
    image = np.random.default_rng(0).normal(0, 1, (3, 50, 70)).astype(np.float32)
    want = np.mean([predict_volume(m, image, CPU) for m in members], axis=0)
    ens = EnsembleNet(members)
    got = predict_volume(ens, image, CPU)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # thresholded: the same masks (but for pixels within float error of the threshold)
    for t in (0.3, 0.5, 0.7):
        differ = (got > t) != (want > t)
        assert not (differ & (np.abs(want - t) > 1e-5)).any()
    # saved and rebuilt from model.json ("members": 3) like any model
    spec = ModelSpec("unet", "resnet18", members=3)
    save_model(tmp_path / "ens", ens, spec, {"threshold": 0.5})
    loaded, config = load_model(tmp_path / "ens")
    assert config["model"]["members"] == 3 and isinstance(loaded, EnsembleNet)
    np.testing.assert_allclose(predict_volume(loaded.eval(), image, CPU), got, atol=1e-6)


def test_a_multiclass_ensemble_averages_the_softmax():
    members = _members(2, classes=3)
    image = np.random.default_rng(1).normal(0, 1, (2, 64, 64)).astype(np.float32)
    want = np.mean([predict_volume(m, image, CPU, classes=True) for m in members], axis=0)
    got = predict_volume(EnsembleNet(members), image, CPU, classes=True)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_test_time_mirroring_is_the_mean_over_the_four_mirror_images():
    (net,) = _members(1)
    image = np.random.default_rng(2).normal(0, 1, (2, 64, 64)).astype(np.float32)
    plain = predict_volume(net, image, CPU)
    views = [plain]
    for flip in ((-1,), (-2,), (-2, -1)):
        views.append(np.flip(predict_volume(net, np.flip(image, flip).copy(), CPU), flip))
    got = predict_volume(net, image, CPU, tta=True)
    np.testing.assert_allclose(got, np.mean(views, axis=0), atol=1e-6)
    assert not np.allclose(got, plain, atol=1e-4)  # mirroring changed something
