"""Whole-volume inference: covidseg's batched path vs a naive per-slice loop (SPEC §6).

A 512 × 512 × ~100 CT phantom (NIfTI) goes through the default network (U-Net / ResNet-34,
random weights: the time does not depend on them) three ways:

* ``naive``: ``model.to(device)``, then one forward pass per slice in a Python loop (batch 1),
  probabilities back to the CPU slice by slice — how an inference script is often first written,
  with the same arithmetic (bf16/fp16 autocast on CUDA, float32 on the CPU);
* ``covidseg``: what ``predict`` and ``evaluate`` run — the network placed channels-last
  (:func:`covidseg.device.place_model`), then :func:`covidseg.inference.predict_volume`: slices
  padded once, batches of ``--batch_size`` slices on CUDA with pinned memory and AMP (on the CPU
  at most ~64k pixels per pass, where larger batches measured slower);
* ``predict (end to end)``: :meth:`covidseg.predict.Predictor.predict_file`, what the ``predict``
  entry point runs per file — read, preprocess exactly as in training (lung extraction, 1 mm
  grid, lung-window z-score), the batched network pass, the masks mapped back to the input's grid
  and written as NIfTI with the report.

Both network arms see the same preprocessed volume and must give the same probabilities.

    python benchmarks/volume_inference.py [--size 512] [--depth_mm 100] [--batch_size 16]

Ratio = naive seconds ÷ covidseg seconds for the network part.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
from bench import header, ratios, table, timed


def naive_per_slice(model, image: np.ndarray, device) -> np.ndarray:
    import torch

    from covidseg.device import autocast
    from covidseg.inference import stride_of

    model.eval()
    m = stride_of(model)
    nz, ny, nx = image.shape
    H, W = -(-ny // m) * m, -(-nx // m) * m
    y0, x0 = (H - ny) // 2, (W - nx) // 2
    out = np.empty(image.shape, np.float32)
    with torch.no_grad():
        for z in range(nz):
            x = torch.zeros((1, 1, H, W))
            x[0, 0, y0:y0 + ny, x0:x0 + nx] = torch.from_numpy(np.array(image[z], np.float32))
            with autocast(device):
                logits = model(x.to(device))
            prob = torch.sigmoid(logits.float())[0, 0, y0:y0 + ny, x0:x0 + nx]
            out[z] = prob.cpu().numpy()
    return out


def main() -> None:
    import torch

    from covidseg.config import FinetuneConfig, PreprocessConfig
    from covidseg.data.layouts import CaseRecord
    from covidseg.data.phantom import make_phantom, write_phantom
    from covidseg.data.preprocess import preprocess_case
    from covidseg.device import place_model, resolve_device
    from covidseg.inference import predict_volume
    from covidseg.models.factory import ModelSpec, build_model
    from covidseg.predict import Predictor

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="in-plane pixels of the CT volume")
    ap.add_argument("--depth_mm", type=int, default=100, help="scanned length (≈ slices at 1 mm)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = FinetuneConfig()
    torch.manual_seed(0)
    model = build_model(ModelSpec(cfg.arch, cfg.encoder)).to(device).eval()  # as naive code does
    placed = place_model(copy.deepcopy(model), device).eval()
    with tempfile.TemporaryDirectory(prefix="covidseg-bench-infer-") as tmp:
        tmp = Path(tmp)
        ph = make_phantom(7, size=args.size, depth_mm=args.depth_mm, centre="A")
        path = tmp / "ct.nii.gz"
        write_phantom(ph, path)
        prep_cfg = PreprocessConfig(lung_method="classical")
        prep = preprocess_case(CaseRecord(case_id="ct", image=str(path)), prep_cfg, None)
        image = prep.image
        header("volume inference: batched predict path vs naive per-slice loop", device,
               model=f"{cfg.arch}/{cfg.encoder}", input=f"{ph.image.shape[2]}x{ph.image.shape[1]}"
               f"x{ph.image.shape[0]} at {ph.spacing[0]:.2f} mm", network_input=
               "x".join(map(str, image.shape[::-1])) + " (1 mm grid)", batch_size=args.batch_size)
        naive = naive_per_slice(model, image, device)
        ours = predict_volume(placed, image, device, args.batch_size)
        # batch and layout sum in another order: ~1e-5 in float32; under bf16 on CUDA a random-weight
        # network's huge logits make larger probability differences, so the masks are compared too
        diff = float(np.abs(naive - ours).max())
        mask_diff = float(np.mean((naive > 0.5) != (ours > 0.5)))
        t_naive = timed(lambda: naive_per_slice(model, image, device), device, args.repeat, 0)
        t_ours = timed(lambda: predict_volume(placed, image, device, args.batch_size), device,
                       args.repeat, 0)
        predictor = Predictor(model, {"preprocess": prep_cfg.to_params()}, device, args.batch_size)
        t_e2e = timed(lambda: predictor.predict_file(path, tmp / "out"), device, args.repeat, 0)
    nz = image.shape[0]
    table([
        {"path": "naive per-slice loop", "seconds": t_naive, "slices/s": nz / t_naive},
        {"path": "covidseg predict_volume", "seconds": t_ours, "slices/s": nz / t_ours},
        {"path": "predict (end to end, file in, masks out)", "seconds": t_e2e, "slices/s": nz / t_e2e},
    ])
    print(f"max |naive - covidseg| probability difference: {diff:.2e}; "
          f"voxels whose mask differs: {mask_diff:.2e}")
    ratios(naive_over_covidseg=t_naive / t_ours, end_to_end_over_network=t_e2e / t_ours)


if __name__ == "__main__":
    main()
