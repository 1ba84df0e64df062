"""Competitive 2D defaults: covidseg's ``finetune`` against a bare smp training loop on the same
2D slices.

One 2D slice set (the phantom slices exported as a public 2D set looks — 8-bit PNG crops of
varying sizes, 0/255 masks — or any folder given), one split, the same number of optimisation
steps and batch size, the same network (smp U-Net, ResNet-34 encoder, 1 channel, random
initial weights — the same ones: both arms seed torch the same way before building it):

* **covidseg** — ``preprocess`` (dataset=glob: each slice resized so its longer side is
  ``--size``, padded, z-scored over the foreground) then ``finetune`` (scratch, the one training
  loop: Adam + StepLR, ce+dice, the ``--augment`` preset, best epoch by validation Dice on
  fold 0 of the non-test slices, trained on the other folds);
* **bare** — the textbook smp loop: images /255, resized (longer side ``--size``) and padded,
  ``A.Affine(rotate=(-10, 10), scale=(0.9, 1.1))`` (p=0.5), BCE + Dice (``smp.losses``), Adam
  at a constant ``--lr``, the final weights.  ``--bare_train split`` trains it on covidseg's
  training folds (the same slices: the headline ratio ``covidseg_over_bare``); ``all`` on every
  non-test slice — covidseg's training folds *and* its validation fold, which covidseg only uses
  to choose its checkpoint (``covidseg_over_bare_all_labelled``: what holding out a validation
  fold costs); ``both`` (default) runs the two.

Both are scored by the same code on the test slices at each slice's **original size**: the
probability map is resized back (covidseg: :func:`covidseg.data.geometry.unresize_slices`; bare:
the pad cut away, ``cv2.resize``), thresholded at 0.5, Dice per image (1 when reference and
prediction are both empty), mean over images.  covidseg's own ``test_volume_dice`` (finetune's
evaluation, on the grid it evaluates on) is printed alongside.

    python benchmarks/slice_baseline.py                      # demo export, 96 px, 300 steps
    python benchmarks/slice_baseline.py --steps 600 --size 128 --augment ct
    python benchmarks/slice_baseline.py --data FOLDER --images 'train/images/*' \\
        --masks 'train/masks/*' --test_images 'test/images/*' --test_masks 'test/masks/*'

Ratio = covidseg test Dice ÷ bare test Dice (both at original size; target ≥ 1.0).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import header, ratios, table

# --- data -----------------------------------------------------------------------------------

def read_gray(path) -> np.ndarray:
    """An 8-bit grayscale image (RGB converted to luminance)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"{path}: cannot read image")
    return image


def read_mask(path) -> np.ndarray:
    return read_gray(path) > 0


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2D Dice of binary masks; 1 when both are empty."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    total = int(pred.sum() + ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total


def split_records(ds, fold: int) -> dict[str, list]:
    """Manifest records (image, infection paths) of covidseg's train / val folds and the test
    set."""
    from covidseg.data.layouts import read_manifest
    from covidseg.data.splits import fold_split

    by_id = {r.case_id: r for r in read_manifest(ds.root / "manifest.csv")}
    train, val = fold_split(ds.splits, fold, "standard")
    return {"train": [by_id[c] for c in train], "val": [by_id[c] for c in val],
            "test": [by_id[c] for c in ds.splits.test]}


# --- the bare smp loop ------------------------------------------------------------------------

def letterbox(image: np.ndarray, size: int, interpolation) -> tuple[np.ndarray, tuple]:
    """Resize so the longer side is ``size`` and centre-pad with 0: (image, (y0, x0, h, w))."""
    import cv2

    h, w = image.shape
    s = size / max(h, w)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    small = cv2.resize(image, (nw, nh), interpolation=interpolation)
    out = np.zeros((size, size), dtype=small.dtype)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out, (y0, x0, nh, nw)


class BareSlices:
    """(image[1, S, S], mask[1, S, S]) float32 tensors: /255, letterboxed, ``A.Affine`` when
    training."""

    def __init__(self, records, size: int, train: bool):
        import albumentations as A
        import cv2

        self.items = []
        for r in records:
            image = letterbox(read_gray(r.image), size, cv2.INTER_AREA)[0]
            mask = letterbox(read_mask(r.infection).astype(np.uint8), size, cv2.INTER_NEAREST)[0]
            self.items.append((image.astype(np.float32) / 255.0, mask))
        self.aug = A.Compose([A.Affine(rotate=(-10, 10), scale=(0.9, 1.1),
                                       border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0)],
                             strict=True, seed=None) if train else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        import torch

        image, mask = self.items[i]
        if self.aug is not None:  # torch's RNG is seeded per loader worker: reproducible
            self.aug.set_random_seed(int(torch.randint(2 ** 31, ()).item()))
            out = self.aug(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return torch.from_numpy(image[None].copy()), torch.from_numpy(mask[None].astype(np.float32))


def train_bare(records, size: int, steps: int, batch_size: int, lr: float, seed: int,
               workers: int, device, encoder: str = "resnet34"):
    import segmentation_models_pytorch as smp
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    model = smp.Unet(encoder, encoder_weights=None, in_channels=1, classes=1).to(device)
    data = BareSlices(records, size, train=True)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=len(data) > batch_size)
    dice_loss = smp.losses.DiceLoss("binary", from_logits=True)
    bce = smp.losses.SoftBCEWithLogitsLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    while step < steps:
        for images, masks in loader:
            images, masks = images.to(device), masks.to(device)
            opt.zero_grad(set_to_none=True)
            logits = model(images)
            loss = bce(logits, masks) + dice_loss(logits, masks)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return model


def score_bare(model, records, size: int, device) -> list[float]:
    """Dice per test slice at its original size."""
    import cv2
    import torch

    model.eval()
    scores = []
    with torch.no_grad():
        for r in records:
            image = read_gray(r.image)
            boxed, (y0, x0, nh, nw) = letterbox(image, size, cv2.INTER_AREA)
            x = torch.from_numpy(boxed.astype(np.float32)[None, None] / 255.0).to(device)
            prob = torch.sigmoid(model(x))[0, 0].float().cpu().numpy()[y0:y0 + nh, x0:x0 + nw]
            prob = cv2.resize(prob, (image.shape[1], image.shape[0]),
                              interpolation=cv2.INTER_LINEAR)
            scores.append(dice(prob > 0.5, read_mask(r.infection)))
    return scores


# --- covidseg ---------------------------------------------------------------------------------

@contextlib.contextmanager
def augment_override(factory):
    """Make ``finetune`` train with ``factory()`` as its augmentation (variants of a preset that
    ``augment=`` cannot name: the measurements that chose the ``slice`` preset)."""
    import covidseg.train.supervised as sv  # where segmentation_task looks it up

    saved = sv.augmentation
    sv.augmentation = lambda ds, name, recipe: factory()
    try:
        yield
    finally:
        sv.augmentation = saved


def train_covidseg(dataset_path: str, epochs: int, args, augment=None,
                   per_epoch: int = 0) -> tuple[object, object]:
    """finetune's result (:class:`~covidseg.stages.results.TrainedResult`) and its kept model
    after ``epochs`` × ``per_epoch`` steps (0: the plan's steps an epoch); ``augment``: a preset
    name (``augment=``), or a callable returning the augmentation object."""
    from covidseg.config import FinetuneConfig
    from covidseg.models.checkpoint import load_model
    from covidseg.stages.finetune import finetune

    augment = args.augment if augment is None else augment
    cfg = FinetuneConfig(data=dataset_path, epochs=epochs, iterations_per_epoch=per_epoch,
                         patience=0, lr=args.lr,
                         batch_size=args.batch_size, lesion_boost=args.lesion_boost,
                         checkpoint_every=0, overlays=0, fold=args.fold, regime="standard",
                         seed=args.seed, workers=args.workers, device=args.device,
                         encoder=args.encoder, threshold=str(getattr(args, "threshold", "0.5")),
                         augment=augment if isinstance(augment, str) else "auto")
    with contextlib.nullcontext() if isinstance(augment, str) else augment_override(augment):
        summary = finetune(cfg, progress=False)
    model_dir = Path(summary.model_uri)
    model, _ = load_model(model_dir)
    if model_dir.parent.parent.name == "training":  # local run folder in the cache: not kept
        shutil.rmtree(model_dir.parent, ignore_errors=True)
    return summary, model


def score_covidseg(model, ds, records, device, threshold: float = 0.5) -> list[float]:
    """Dice per test slice at its original size (the preprocessed map resized back)."""
    from covidseg.data.geometry import unresize_slices
    from covidseg.inference import predict_volume

    fit = ds.descriptor["config"].get("slice_fit") or "resize"
    scores = []
    for r in records:
        image = np.asarray(ds.load(r.case_id)[0], dtype=np.float32)
        prob = predict_volume(model, image, device, 16)
        ref = read_mask(r.infection)
        if prob.shape[1:] != ref.shape:
            prob = unresize_slices(prob, ref.shape, fit)
        scores.append(dice(prob[0] > threshold, ref))
    return scores


def preprocess(folder: Path, patterns: dict, args) -> str:
    from covidseg.config import PreprocessConfig
    from covidseg.stages.preprocess import preprocess_dataset

    cfg = PreprocessConfig(data=str(folder), dataset="glob", image_size=args.size,
                           test_cases=args.test_cases, folds=args.folds, lung_method="none",
                           seed=args.seed, **patterns)
    return preprocess_dataset(cfg, progress=False)["dataset_path"]


def steps_plan(n_train: int, batch_size: int, steps: int) -> tuple[int, int, int]:
    """(epochs, batches per epoch, steps) of the covidseg run: whole epochs (its loader drops the
    last partial batch), at least ``steps``; the bare loop then runs exactly as many steps."""
    per_epoch = n_train // batch_size if n_train > batch_size else 1
    epochs = max(1, math.ceil(steps / per_epoch))
    return epochs, per_epoch, epochs * per_epoch


def main() -> None:
    from covidseg.base.device import resolve_device
    from covidseg.data.phantom import export_demo_slices
    from covidseg.data.store import PreprocessedDataset
    from covidseg.train.tasks import default_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="", help="2D slice folder (default: export the demo slices "
                                               "to a temporary folder)")
    ap.add_argument("--images", default="train/images/*")
    ap.add_argument("--masks", default="train/masks/*")
    ap.add_argument("--test_images", default="test/images/*")
    ap.add_argument("--test_masks", default="test/masks/*")
    ap.add_argument("--test_cases", type=int, default=30,
                    help="test slices drawn when the folder has no test split")
    ap.add_argument("--labelled", type=int, default=60, help="demo: labelled training slices")
    ap.add_argument("--test", type=int, default=30, help="demo: test slices")
    ap.add_argument("--export_size", default="100,200",
                    help="demo: range of the exported crops' longer side (px)")
    ap.add_argument("--export_seed", type=int, default=0, help="demo: the export's seed")
    ap.add_argument("--steps", type=int, default=300, help="optimisation steps of each arm "
                                                           "(covidseg: rounded up to whole epochs)")
    ap.add_argument("--size", type=int, default=96, help="training side (multiple of 32)")
    ap.add_argument("--seed", type=int, default=0, help="training seed of both arms (initial "
                                                        "weights, sampling, augmentation)")
    ap.add_argument("--augment", default="slice", choices=("strong", "ct", "slice", "none"),
                    help="covidseg's augmentation preset")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3,
                    help="peak learning rate of both arms (covidseg: AdamW + cosine, bare: "
                         "constant Adam)")
    ap.add_argument("--lesion_boost", type=float, default=1.0, help="covidseg's lesion_boost")
    ap.add_argument("--threshold", default="0.5", help="covidseg's decision threshold: a "
                                                      "probability, or auto (chosen on its "
                                                      "validation fold); the bare loop uses 0.5")
    ap.add_argument("--folds", type=int, default=5, help="covidseg's folds (validation = 1 fold)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--bare_train", default="both", choices=("split", "all", "both"),
                    help="bare loop's training slices: covidseg's training folds (split), all "
                         "non-test slices (covidseg's train + val folds), or both runs")
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.size % 32:
        ap.error("--size must be a multiple of 32")
    device = resolve_device(args.device)
    workers = default_workers(args.workers)

    with contextlib.ExitStack() as stack:
        if args.data:
            folder = Path(args.data).expanduser()
            patterns = {"images": args.images, "masks": args.masks,
                        "test_images": args.test_images, "test_masks": args.test_masks}
            patterns = {k: v for k, v in patterns.items() if (folder / v.split("*")[0]).exists()}
        else:
            folder = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="covidseg-slices-")))
            lo, _, hi = args.export_size.partition(",")
            export = export_demo_slices(folder, n_labelled=args.labelled, n_test=args.test,
                                        size=(int(lo), int(hi or lo)), seed=args.export_seed)
            patterns = {k: export[k] for k in ("images", "masks", "test_images", "test_masks")}
        t0 = time.perf_counter()
        dataset_path = preprocess(folder, patterns, args)
        t_pre = time.perf_counter() - t0
        ds = PreprocessedDataset(Path(dataset_path))
        recs = split_records(ds, args.fold)
        arms = {"split": recs["train"], "all": recs["train"] + recs["val"]}
        arms = arms if args.bare_train == "both" else {args.bare_train: arms[args.bare_train]}
        epochs, per_epoch, steps = steps_plan(len(recs["train"]), args.batch_size, args.steps)
        shapes = [read_gray(r.image).shape for r in recs["test"]]
        header("2D slices: covidseg finetune vs a bare smp loop (same steps, same test slices)",
               device, data=str(args.data or "demo slice export"), size=args.size,
               augment=args.augment, threshold=args.threshold, steps=steps, epochs=epochs,
               batches_per_epoch=per_epoch,
               batch_size=args.batch_size, lr=args.lr, lesion_boost=args.lesion_boost,
               covidseg_train=len(recs["train"]), covidseg_val=len(recs["val"]),
               bare_train=", ".join(f"{len(v)} ({k})" for k, v in arms.items()),
               test=len(recs["test"]),
               test_sizes=f"{min(min(s) for s in shapes)}-{max(max(s) for s in shapes)} px",
               workers=workers, preprocess_s=round(t_pre, 1))

        t0 = time.perf_counter()
        summary, model = train_covidseg(dataset_path, epochs, args, per_epoch=per_epoch)
        t_ours = time.perf_counter() - t0
        ours = float(np.mean(score_covidseg(model, ds, recs["test"], device,
                                            float(summary.threshold))))
        del model

        bare = {}
        for name, train_recs in arms.items():
            t0 = time.perf_counter()
            bare_model = train_bare(train_recs, args.size, steps, args.batch_size, args.lr,
                                    args.seed, workers, device, args.encoder)
            bare[name] = (float(np.mean(score_bare(bare_model, recs["test"], args.size, device))),
                          time.perf_counter() - t0, len(train_recs))
            del bare_model

    print(f"covidseg finetune: best epoch {summary.best_epoch} of {epochs}, validation Dice "
          f"{summary.best_val_volume_dice:.4f}, threshold {summary.threshold:.2f}, "
          f"its own test_volume_dice {summary.test_volume_dice:.4f} (finetune's evaluation)")
    table([{"arm": f"covidseg finetune ({len(recs['train'])} training slices)", "test Dice": ours,
            "grid": "original size", "steps": steps, "seconds": t_ours}]
          + [{"arm": f"bare smp loop ({n} slices: {name})", "test Dice": d,
              "grid": "original size", "steps": steps, "seconds": t}
             for name, (d, t, n) in bare.items()], floatfmt="{:.4f}")
    out = {}
    if "split" in bare:
        split = bare["split"][0]
        out["covidseg_over_bare"] = ours / split if split > 0 else float("inf")
    if "all" in bare:
        out["covidseg_over_bare_all_labelled"] = ours / bare["all"][0] if bare["all"][0] > 0 \
            else float("inf")
    ratios(**out)


if __name__ == "__main__":
    main()
