"""``torchrun`` data parallelism against one process: time per epoch for the same global batch.

Arm 1: ``covidseg finetune`` in one process, batch ``B``.  Arm 2: ``torchrun --standalone
--nproc_per_node=N -m covidseg finetune``, batch ``B/N`` per process (the same global batch, the
same slices per epoch).  Both run the real entry point against a real MLflow server; the times
are the runs' own per-epoch metrics ``train_seconds`` (training only) and ``epoch_seconds``
(with rank 0's validation), medians over the epochs after the first (start-up).

    python benchmarks/data_parallel.py [--procs 2] [--epochs 4] [--batch 8] [--size 128]

On a CPU the processes share its cores (torchrun gives each ``OMP_NUM_THREADS=1``; one process
uses them all for its intra-op threads), so a ratio near 1 is the expected best there: the gain is
on machines with one GPU per process.  Ratio = N-process seconds ÷ 1-process seconds per epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench import REPO, demo_dataset, header, ratios, table, tracking_server


def epoch_times(client, run_id: str, key: str) -> float:
    values = [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
    return statistics.median(values[1:] if len(values) > 1 else values)


def finetune(cmd: list[str], ds_root: Path, args, batch: int, experiment: str) -> None:
    full = [*cmd, "finetune", "--data", str(ds_root), "--epochs", str(args.epochs),
            "--patience", "0", "--batch_size", str(batch), "--workers", "0",
            "--checkpoint_every", "0", "--overlays", "0", "--encoder", args.encoder,
            "--device", "cpu", "--experiment", experiment]
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": str(REPO)}
    r = subprocess.run(full, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(full[:6])}… failed:\n{r.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=8, help="global batch (slices)")
    p.add_argument("--size", type=int, default=128, help="phantom side (pixels)")
    p.add_argument("--encoder", default="resnet18")
    args = p.parse_args()
    import torch
    from mlflow.tracking import MlflowClient

    if args.batch % args.procs:
        sys.exit(f"--batch {args.batch} is not a multiple of --procs {args.procs}")
    header("torchrun data parallelism vs one process (finetune)", torch.device("cpu"),
           procs=args.procs, epochs=args.epochs, global_batch=args.batch, size=args.size,
           encoder=args.encoder)
    ds = demo_dataset(labelled=6, size=args.size, depth_mm=48)
    with tracking_server() as uri:
        client = MlflowClient(uri)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={args.procs}", "-m", "covidseg"]
        finetune([sys.executable, "-m", "covidseg"], ds.root, args, args.batch, "bench-dp-1")
        finetune(torchrun, ds.root, args, args.batch // args.procs, f"bench-dp-{args.procs}")
        rows = []
        for procs in (1, args.procs):
            exp = client.get_experiment_by_name(f"bench-dp-{procs}")
            run = client.search_runs([exp.experiment_id])[0]
            rows.append({"processes": procs, "batch_per_process": args.batch // procs,
                         "world_size": int(run.data.params["world_size"]),
                         "train_s_per_epoch": epoch_times(client, run.info.run_id, "train_seconds"),
                         "epoch_s_with_val": epoch_times(client, run.info.run_id, "epoch_seconds"),
                         "final_train_loss": run.data.metrics["train_loss"]})
    table(rows)
    one, many = rows
    ratios(train_epoch=many["train_s_per_epoch"] / one["train_s_per_epoch"],
           epoch_with_validation=many["epoch_s_with_val"] / one["epoch_s_with_val"])


if __name__ == "__main__":
    main()
