"""Does the data pipeline outrun the model?  (SPEC §6: the GPU must never be starved.)

Slices per second of the real training input — the finetune task's DataLoader (memory-mapped
slices, padding, the default augmentation in ``workers`` processes, pinned memory on CUDA, workers
kept between epochs) — against slices per second of one training step of the default model
(forward, ce+dice loss, backward, optimiser step; AMP on CUDA) on batches already on the device,
at 256² and 512².

    python benchmarks/data_pipeline.py [--sizes 256,512] [--steps 4] [--epochs 3] [--workers -1]

Ratio per size = pipeline slices/s ÷ model slices/s; it must be > 1.  The loader's rate is
timed over whole epochs after the first (which starts the workers; its seconds are printed).
"""

from __future__ import annotations

import argparse
import time

from bench import demo_dataset, header, ratios, sync, table, timed


def pipeline_rate(task, epochs: int) -> tuple[float, int, float]:
    """Slices/s of the task's loader over whole epochs, as the training loop draws them, after a
    first epoch that starts the (persistent) workers; also that first epoch's seconds."""
    t0 = time.perf_counter()
    for _ in task.batches(0):
        pass
    first = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        for images, _ in task.batches(epoch):
            n += images.shape[0]
    return n / (time.perf_counter() - t0), n, first


def model_rate(task, cfg, device, steps: int) -> float:
    """Slices/s of optimiser steps on one batch already on the device."""
    import torch

    from covidseg.base.device import autocast, grad_scaler, place_model

    model = place_model(task.model, device).train()
    images, masks = next(iter(task.batches(0)))
    images, masks = images.to(device), masks.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss = task.loss(model(images), masks)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return images.shape[0] / timed(step, device, repeat=steps, warmup=1)


def main() -> None:
    from covidseg.base.device import resolve_device
    from covidseg.config import FinetuneConfig
    from covidseg.data.splits import fold_split
    from covidseg.models.factory import ModelSpec, build_model
    from covidseg.stages.settings import supervised_settings
    from covidseg.train.supervised import segmentation_task
    from covidseg.train.tasks import default_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--steps", type=int, default=4, help="timed model steps per size")
    ap.add_argument("--epochs", type=int, default=3,
                    help="timed loader epochs per size (after one that starts the workers)")
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: the default)")
    ap.add_argument("--batch_size", type=int, default=FinetuneConfig.batch_size)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = FinetuneConfig(workers=args.workers, batch_size=args.batch_size, lesion_boost=3.0)
    header("data pipeline vs model step", device, model=f"{cfg.arch}/{cfg.encoder}",
           batch_size=cfg.batch_size, workers=default_workers(cfg.workers))
    rows, out = [], {}
    for size in [int(s) for s in args.sizes.split(",")]:
        ds = demo_dataset(labelled=8, size=size, depth_mm=48, image_size=size)
        train_ids, val_ids = fold_split(ds.splits, 0, "standard")
        model = build_model(ModelSpec(cfg.arch, cfg.encoder))
        task = segmentation_task(model, ds, train_ids, val_ids, supervised_settings(cfg),
                                 device)
        data, n, first = pipeline_rate(task, args.epochs)
        net = model_rate(task, cfg, device, args.steps)
        sync(device)
        rows.append({"size": f"{size}x{size}", "pipeline slices/s": data, "model slices/s": net,
                     "pipeline/model": data / net, "slices timed": n,
                     "first epoch s": first})
        out[f"pipeline_over_model_{size}"] = data / net
    table(rows)
    ratios(**out)


if __name__ == "__main__":
    main()
