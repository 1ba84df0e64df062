"""The training loop's overhead over a bare PyTorch loop doing the same steps (SPEC §6: ≤ 5 %).

Both arms train the same network from the same initial weights on the same batches (the finetune
task's loader, seeded per epoch) with the same optimiser (Adam + StepLR) and validate the same
volumes after each epoch.  The covidseg arm is the real path of every training entry point,
``Stage.train`` → ``fit``, logging to a real MLflow server: per-epoch metrics, the resume state
(after the first epoch, then at most once a minute), best-weights bookkeeping, the
training-curve figure at the end.  The
bare arm is the textbook ``for epoch: for batch: zero_grad / forward / backward / step``.  Arms
alternate (bare, covidseg, bare, covidseg, …) and the median of each is compared, after one
untimed one-epoch run of each (CUDA/cuDNN initialisation, the MLflow experiment's creation).

    python benchmarks/trainer_overhead.py [--epochs 6] [--repeats 2] [--warmup 1]

Uses ``MLFLOW_TRACKING_URI`` when set, else starts a throw-away local ``mlflow server``.
Ratio = covidseg seconds ÷ bare seconds (target ≤ 1.05).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import time

from bench import demo_dataset, header, ratios, sync, table, tracking_server


def bare_loop(task, model, cfg, device, epochs: int) -> None:
    import torch

    from covidseg.base.device import autocast, grad_scaler, place_model
    from covidseg.train.optim import lr_factor

    model = place_model(model, device)  # the layout covidseg trains in: same arithmetic
    params = [p for p in model.parameters() if p.requires_grad]
    # the same work as covidseg's loop with cfg: the optimiser, the per-step schedule, clipping
    opt = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(
        cfg.optimizer, torch.optim.AdamW)(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = epochs * task.steps_per_epoch()
    warm = min(cfg.warmup, total // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.schedule, total, warm, task.steps_per_epoch(),
                                 cfg.lr_step, cfg.lr_gamma))
    scaler = grad_scaler(device)
    step = 0
    for epoch in range(epochs):
        model.train()
        for batch in task.batches(epoch):
            opt.zero_grad(set_to_none=True)
            with autocast(device):
                loss, _ = task.training_step(batch, step)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
        task.validate(epoch)


def covidseg_loop(task, cfg, device, spec, extra) -> None:
    from covidseg.stages.stage import Stage
    from covidseg.tracking import start_run

    with start_run("benchmark-trainer", cfg.to_params(), cfg.experiment,
                   recipe_filled=cfg.recipe_filled) as tracker:
        stage = Stage(cfg, tracker, device, progress=False)
        stage.train(task, spec, extra)
    shutil.rmtree(stage.workdir, ignore_errors=True)


def main() -> None:
    from covidseg.base.device import resolve_device
    from covidseg.config import FinetuneConfig
    from covidseg.data.splits import fold_split
    from covidseg.models.factory import ModelSpec, build_model
    from covidseg.stages.settings import model_extra, supervised_settings
    from covidseg.stages.stage import seed_everything
    from covidseg.train.supervised import segmentation_task
    from covidseg.train.tasks import default_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed one-epoch runs of each arm first")
    ap.add_argument("--labelled", type=int, default=12, help="phantoms (8 train, 2 val, 2 test)")
    ap.add_argument("--size", type=int, default=128, help="phantom side in pixels")
    ap.add_argument("--encoder", default=FinetuneConfig.encoder)
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = FinetuneConfig(epochs=args.epochs, patience=0, encoder=args.encoder, checkpoint_every=0,
                         workers=args.workers, device=args.device, experiment="benchmarks")
    ds = demo_dataset(labelled=args.labelled, size=args.size, depth_mm=48, test_cases=2, folds=5)
    train_ids, val_ids = fold_split(ds.splits, 0, "standard")
    spec = ModelSpec(cfg.arch, cfg.encoder)
    seed_everything(0)
    initial = {k: v.clone() for k, v in build_model(spec).state_dict().items()}
    n_slices = sum(ds.cases[c]["shape"][0] for c in train_ids)
    header("trainer overhead: covidseg loop (+ MLflow) vs bare PyTorch loop", device,
           model=f"{cfg.arch}/{cfg.encoder}", train_volumes=len(train_ids),
           val_volumes=len(val_ids), slices_per_epoch=n_slices, batch_size=cfg.batch_size,
           epochs=args.epochs, workers=default_workers(cfg.workers))
    times: dict[str, list[float]] = {"bare": [], "covidseg": []}
    with tracking_server() as uri:
        print(f"tracking: {uri}")
        extra = model_extra(ds, cfg, "segmentation", "benchmark")
        for rep in range(args.warmup + args.repeats):
            timed_rep = rep >= args.warmup
            run_cfg = cfg if timed_rep else dataclasses.replace(cfg, epochs=1)
            for arm in ("bare", "covidseg"):
                seed_everything(0)
                model = build_model(spec)
                model.load_state_dict(initial)
                model.to(device)
                task = segmentation_task(model, ds, train_ids, val_ids,
                                         supervised_settings(run_cfg), device)
                sync(device)
                t0 = time.perf_counter()
                if arm == "bare":
                    bare_loop(task, model, run_cfg, device, run_cfg.epochs)
                else:
                    covidseg_loop(task, run_cfg, device, spec, extra)
                sync(device)
                if timed_rep:
                    times[arm].append(time.perf_counter() - t0)
    bare, ours = statistics.median(times["bare"]), statistics.median(times["covidseg"])
    table([{"loop": arm, "seconds (median)": statistics.median(t),
            "s/epoch": statistics.median(t) / args.epochs,
            "runs": " ".join(f"{x:.1f}" for x in t)} for arm, t in times.items()])
    ratios(covidseg_over_bare=ours / bare)


if __name__ == "__main__":
    main()
