"""Whole-volume inference: covidseg's batched path vs a naive per-slice loop (SPEC §6), and
``predict`` on a folder of volumes end to end against its network alone (issue 16).

A 512 × 512 × ~100 CT phantom (NIfTI) goes through the default network (U-Net / ResNet-34,
random weights: the time does not depend on them) three ways:

* ``naive``: ``model.to(device)``, then one forward pass per slice in a Python loop (batch 1),
  probabilities back to the CPU slice by slice — how an inference script is often first written,
  with the same arithmetic (bf16/fp16 autocast on CUDA, float32 on the CPU);
* ``covidseg``: what ``predict`` and ``evaluate`` run — the network placed channels-last
  (:func:`covidseg.base.device.place_model`), then :func:`covidseg.inference.predict_volume`: slices
  padded once, batches of ``--batch_size`` slices on CUDA with pinned memory and AMP (on the CPU
  at most ~64k pixels per pass, where larger batches measured slower);
* ``predict (end to end)``: :meth:`covidseg.inference.predictor.Predictor.predict_file` on that one
  file.

Both network arms see the same preprocessed volume and must give the same probabilities.

Then a folder of ``--volumes`` phantoms of that size (different seeds, so different spacings;
classical lung extraction) goes through :func:`covidseg.inference.pipelined.predict_inputs`, what
the ``predict`` entry point runs:

* ``network only``: :meth:`Predictor.network` on each volume already read and preprocessed, all
  cores (``--network_1``: one thread too);
* ``sequential``: ``prefetch=0`` — read, preprocess (lung extraction, 1 mm grid, z-score),
  network, back to the input's grid, masks + report written, one volume after the other;
* ``pipelined``: ``prefetch=--prefetch`` — the next volumes read and preprocessed in a thread
  while the network works, the previous one written by another; once per entry of ``--threads``:
  0 = predict's own choice (the network on fewer threads while the other stages work,
  :class:`covidseg.inference.pipelined.CpuShare`), -1 = all cores throughout, k = k threads
  throughout.

The arms run in ``--rounds`` rounds (each arm once per round, one after the other) and the best
round counts: other work on the machine only adds time.  Every arm runs after the network has met
each volume's slice shapes once (the CPU's convolutions are set up per shape).  The per-step
table (read, lung extraction, the rest of preprocessing, network, writing) is measured on the
same volumes one step at a time.  Each arm also prints this process's CPU seconds and the
machine's load average when it ended: timings taken while other work shares the cores are not
comparable.  The pipelined masks, maps and reports must be the files the sequential run writes.

    python benchmarks/volume_inference.py [--size 512] [--depth_mm 100] [--volumes 8]

Ratios: naive seconds ÷ covidseg seconds for the network part; end-to-end seconds per volume ÷
network-only seconds per volume (all cores) for the folder, sequential and pipelined (the first
``--threads`` entry).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import header, ratios, table, timed


def naive_per_slice(model, image: np.ndarray, device) -> np.ndarray:
    import torch

    from covidseg.base.device import autocast
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


def phantom_folder(folder: Path, n: int, size: int, depth_mm: int) -> list[Path]:
    """``n`` phantom CT volumes (centre A: 0.6-0.75 mm pixels, 1 mm slices; one seed each)."""
    from covidseg.data.phantom import make_phantom, write_phantom

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"ct{i:02d}.nii.gz"
        if not path.exists():
            write_phantom(make_phantom(100 + i, size=size, depth_mm=depth_mm, centre="A"), path)
        paths.append(path)
    return paths


def written(folder: Path) -> dict:
    """Every file ``predict`` wrote: NIfTI voxel arrays (the compressed bytes may differ), the
    reports and the CSV as text."""
    import SimpleITK as sitk

    out = {}
    for f in sorted(folder.iterdir()):
        out[f.name] = sitk.GetArrayFromImage(sitk.ReadImage(str(f))) \
            if f.name.endswith(".nii.gz") else f.read_text()
    return out


def same_files(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)


def warm_up(predictor, image: np.ndarray) -> None:
    """One forward pass of each batch shape ``predict_volume`` will use on ``image`` (the CPU's
    convolutions are set up per input shape, once), not the whole volume."""
    from covidseg.base.device import inference_batch
    from covidseg.inference import predict_volume, stride_of

    m = stride_of(predictor.model)
    nz, ny, nx = image.shape
    b = inference_batch(predictor.batch_size, predictor.device, -(-ny // m) * m, -(-nx // m) * m)
    for k in {min(b, nz), nz % b} - {0}:
        predict_volume(predictor.model, image[:k], predictor.device, predictor.batch_size)


class Arm:
    """Wall and process CPU seconds of a block, and the machine's load average after it."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        import os

        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.load = os.getloadavg()[0]


def folder_benchmark(predictor, inputs: list[Path], tmp: Path, prefetch: int,
                     threads: list[int], network_1: bool = False, rounds: int = 2) -> dict:
    """The per-step table, then ``rounds`` rounds of network only, sequential and pipelined
    ``predict`` of ``inputs``, one arm after the other in each round (arm → list of Arm, times
    per volume); every arm runs after the network met each volume's slice shapes once."""
    import SimpleITK as sitk
    import torch

    from covidseg.data.lungs import classical_lung_mask
    from covidseg.data.readers import read_image, to_canonical
    from covidseg.inference.pipelined import OutputSettings, predict_inputs

    n, cores = len(inputs), torch.get_num_threads()
    steps = {k: 0.0 for k in ("read", "lungs", "prepare", "network", "finish")}
    prepared_all = []
    for path in inputs:  # one step at a time, nothing else running
        t0 = time.perf_counter()
        image = to_canonical(read_image(path))
        t1 = time.perf_counter()
        classical_lung_mask(sitk.GetArrayFromImage(image).astype(np.float32), image.GetSpacing())
        t2 = time.perf_counter()
        prepared = predictor.prepare(path)
        t3 = time.perf_counter()
        warm_up(predictor, prepared[3].image)
        t3b = time.perf_counter()
        probs = predictor.network(prepared)
        t4 = time.perf_counter()
        predictor.finish(prepared, probs, tmp / "steps")
        t5 = time.perf_counter()
        for k, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3b, t5 - t4)):
            steps[k] += dt / n
        prepared_all.append(prepared)
    arms: dict[str, list[Arm]] = {}

    def arm(name: str, fn) -> None:
        with Arm() as a:
            fn()
        a.wall, a.cpu = a.wall / n, a.cpu / n
        arms.setdefault(name, []).append(a)

    def network_only(k: int):
        def run():
            torch.set_num_threads(k)
            try:
                for prepared in prepared_all:
                    predictor.network(prepared)
            finally:
                torch.set_num_threads(cores)
        return run

    def predict(out: Path, **kw):
        def run():
            reports, failed = predict_inputs(predictor, inputs, OutputSettings(out),
                                             progress=False, **kw)
            assert len(reports) == n and not failed, failed
        return run

    identical, reference = True, None
    for r in range(rounds):
        arm(f"network only (preprocessed arrays), {cores} threads", network_only(cores))
        if network_1 and cores > 1:
            arm("network only (preprocessed arrays), 1 thread", network_only(1))
        arm("end to end, sequential (prefetch=0)", predict(tmp / "sequential", prefetch=0))
        if r == 0:
            reference = written(tmp / "sequential")
        for k in threads:  # 0: predict's own choice (CpuShare); k > 0: k torch threads throughout
            k = cores if k < 0 else k
            name = f"end to end, pipelined (prefetch={prefetch}), network threads " + \
                (f"{cores} or fewer while the others work (default)" if not k else f"{k} fixed")
            arm(name, predict(tmp / f"pipelined_{k}", prefetch=prefetch, network_threads=k))
            if r == 0:
                identical &= same_files(written(tmp / f"pipelined_{k}"), reference)
    return {"steps": steps, "arms": arms, "identical": identical, "cores": cores}


def main() -> None:
    import torch

    from covidseg.base.device import place_model, resolve_device
    from covidseg.config import FinetuneConfig, PreprocessConfig
    from covidseg.data.layouts import CaseRecord
    from covidseg.data.phantom import make_phantom, write_phantom
    from covidseg.data.steps import preprocess_case
    from covidseg.inference import predict_volume
    from covidseg.inference.predictor import Predictor
    from covidseg.models.factory import ModelSpec, build_model
    from covidseg.stages.preprocess import preprocess_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="in-plane pixels of the CT volume")
    ap.add_argument("--depth_mm", type=int, default=100, help="scanned length (≈ slices at 1 mm)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--volumes", type=int, default=8, help="volumes in the predict folder")
    ap.add_argument("--prefetch", type=int, default=2, help="predict's prefetch when pipelined")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of the folder arms (each arm once per round; the best counts)")
    ap.add_argument("--network_1", action="store_true",
                    help="also time the network alone on one thread (a loaded machine can make "
                         "all-core OpenMP slower than one thread)")
    ap.add_argument("--threads", default="0,-1",
                    help="the pipelined arm's network threads, comma-separated: 0 = predict's "
                         "own choice (fewer while the other stages work), -1 = all cores "
                         "throughout, k = k throughout")
    ap.add_argument("--inputs", default="", help="a folder for the phantom volumes, kept between "
                                                 "runs (default: a temporary one)")
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
        prep = preprocess_case(CaseRecord(case_id="ct", image=str(path)),
                               preprocess_settings(prep_cfg), None)
        image = prep.image
        header("volume inference: batched predict path vs naive per-slice loop", device,
               model=f"{cfg.arch}/{cfg.encoder}", input=f"{ph.image.shape[2]}x{ph.image.shape[1]}"
               f"x{ph.image.shape[0]} at {ph.spacing[0]:.2f} mm", network_input=
               "x".join(map(str, image.shape[::-1])) + " (1 mm grid)", batch_size=args.batch_size)
        naive = naive_per_slice(model, image, device)
        ours = predict_volume(placed, image, device, args.batch_size)
        # batch and layout sum in another order: ~1e-5 in float32; under bf16 on CUDA a
        # random-weight network's huge logits make larger probability differences, so the masks
        # are compared too
        diff = float(np.abs(naive - ours).max())
        mask_diff = float(np.mean((naive > 0.5) != (ours > 0.5)))
        t_naive = timed(lambda: naive_per_slice(model, image, device), device, args.repeat, 0)
        t_ours = timed(lambda: predict_volume(placed, image, device, args.batch_size), device,
                       args.repeat, 0)
        predictor = Predictor(model, {"preprocess": prep_cfg.to_params()}, device,
                              preprocess_settings(prep_cfg), args.batch_size)
        t_e2e = timed(lambda: predictor.predict_file(path, tmp / "out"), device, args.repeat, 0)
        nz = image.shape[0]
        table([
            {"path": "naive per-slice loop", "seconds": t_naive, "slices/s": nz / t_naive},
            {"path": "covidseg predict_volume", "seconds": t_ours, "slices/s": nz / t_ours},
            {"path": "predict (end to end, file in, masks out)", "seconds": t_e2e,
             "slices/s": nz / t_e2e},
        ])
        print(f"max |naive - covidseg| probability difference: {diff:.2e}; "
              f"voxels whose mask differs: {mask_diff:.2e}")

        import torch

        threads = [int(t) for t in args.threads.split(",") if t]
        inputs = phantom_folder(Path(args.inputs) if args.inputs else tmp / "folder",
                                args.volumes, args.size, args.depth_mm)
        print(f"\n== predict on a folder of {len(inputs)} volumes {args.size}x{args.size}x"
              f"~{args.depth_mm} mm (classical lungs), per volume; prefetch={args.prefetch}")
        r = folder_benchmark(predictor, inputs, tmp, args.prefetch, threads, args.network_1,
                             args.rounds)
    st, arms, cores = r["steps"], r["arms"], r["cores"]
    rest = max(0.0, st["prepare"] - st["read"] - st["lungs"])  # a difference: noise can cross 0
    rows = [("read (NIfTI + gzip check, reorient)", st["read"]),
            ("lung extraction (classical)", st["lungs"]),
            ("rest of preprocessing (1 mm grid, z-score)", rest),
            (f"network, {cores} threads", st["network"]),
            ("back to the input grid, masks + report written", st["finish"])]
    total = sum(v for _, v in rows)
    table([{"step (one at a time)": k, "seconds/volume": v, "share": f"{100 * v / total:.0f} %"}
           for k, v in rows])
    print()
    best = {name: min(a.wall for a in runs) for name, runs in arms.items()}  # noise only adds
    net = next(iter(best.values()))  # the network alone, all cores
    table([{"predict": name, "seconds/volume": best[name], "over network": best[name] / net,
            "rounds": ", ".join(f"{a.wall:.3g}" for a in runs),
            "CPU s/volume": ", ".join(f"{a.cpu:.3g}" for a in runs),
            "load after": ", ".join(f"{a.load:.2f}" for a in runs)}
           for name, runs in arms.items()])
    print(f"pipelined outputs identical to sequential: {r['identical']}")
    print(f"(seconds/volume: the best of {args.rounds} rounds, each arm once per round; CPU s: "
          "this process's threads together; load after: the machine's 1-minute load average when "
          f"the arm ended — {cores} cores, so more than {cores} means other work shared them)")
    sequential = best["end to end, sequential (prefetch=0)"]
    pipelined = [v for name, v in best.items() if "pipelined" in name]
    own = pipelined[0] if pipelined else float("nan")  # the first --threads entry
    ratios(naive_over_covidseg=t_naive / t_ours, end_to_end_over_network=t_e2e / t_ours,
           folder_sequential_over_network=sequential / net,
           folder_pipelined_over_network=own / net,
           sequential_over_pipelined=sequential / own)


if __name__ == "__main__":
    main()
