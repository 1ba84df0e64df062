"""Which pseudo-label method and setting gives labels that are right?  (issue #8)

On a phantom cohort whose unlabelled volumes know their true lesions, one network is fine-tuned
on ``--train_cases`` labelled volumes (or ``--model`` is given), then ``pseudolabel`` runs once per
configuration — self-training (``source=model``) at several confidence thresholds, and the
thesis's patch similarity (``source=similarity``) over feature × band × patch size — and its
oracle scores are printed side by side: acceptance, the pooled Dice / precision / recall of the
accepted labels against the truth, the same for what was rejected, the share of accepted items
with lesion, and patches lying mostly on padding.  This is the table the defaults were chosen by.

    python benchmarks/pseudo_label_quality.py                 # 96 px cohort, 5 labelled volumes
    python benchmarks/pseudo_label_quality.py --train_cases 2 --epochs 60

No tracking server: the runs are not logged (their metrics are collected in memory).
"""

from __future__ import annotations

import argparse

from bench import demo_dataset, header, ratios, table

CONFIGS = [
    {"source": "model", "confidence": 0.9},
    {"source": "model", "confidence": 0.97},
    {"source": "model", "confidence": 0.99},
    *[{"source": "similarity", "feature": f, "band": b, "patch_size": p, **extra}
      for p in (68, 32) for f in ("gap-raw", "gap-centred")
      for b, extra in (("absolute", {}), ("quantile", {"accept_fraction": 0.2}),
                       ("quantile", {"accept_fraction": 0.05}))],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=int, default=20)
    ap.add_argument("--unlabelled", type=int, default=20)
    ap.add_argument("--size", type=int, default=96, help="phantom side in pixels")
    ap.add_argument("--depth", type=int, default=32, help="phantom length in mm")
    ap.add_argument("--train_cases", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=400,
                    help="optimiser steps of the finetune run (epochs of 50)")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--model", default="", help="a fine-tuned model folder / run instead")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from covidseg.base.device import resolve_device
    from covidseg.config import FinetuneConfig, PseudolabelConfig
    from covidseg.stages.finetune import finetune
    from covidseg.stages.pseudolabel import pseudolabel
    from covidseg.tracking import NullTracker

    header("pseudo-label quality against the phantoms' truth", resolve_device("auto"),
           cohort=f"{args.labelled} labelled + {args.unlabelled} unlabelled, {args.size} px",
           train_cases=args.train_cases, iterations=args.iterations, encoder=args.encoder)
    data = str(demo_dataset(args.labelled, args.size, args.depth, unlabelled=args.unlabelled,
                            test_cases=8, folds=6).root)
    model = args.model
    if not model:
        ft = finetune(FinetuneConfig(data=data, encoder=args.encoder, train_cases=args.train_cases,
                                     epochs=max(1, -(-args.iterations // 50)),
                                     iterations_per_epoch=min(50, args.iterations), patience=0,
                                     lr=1e-3, lesion_boost=3.0,
                                     seed=args.seed, overlays=0, workers=0, checkpoint_every=0),
                     progress=False)
        model = ft.model_uri
        print(f"fine-tuned on {args.train_cases} volumes: test volume Dice "
              f"{ft.test_volume_dice:.3f} (val {ft.best_val_volume_dice:.3f})", flush=True)

    class Collect(NullTracker):
        def __init__(self):
            self.metrics = {}

        def log_metrics(self, metrics, step=None):
            self.metrics.update(metrics)

    rows = []
    for kw in CONFIGS:
        t = Collect()
        pseudolabel(PseudolabelConfig(data=data, model=model, seed=args.seed, **kw), t)
        m = t.metrics
        name = (f"model conf {kw['confidence']}" if kw["source"] == "model" else
                f"sim {kw['feature']} {kw['band']}"
                + (f" {kw['accept_fraction']:.0%}" if kw["band"] == "quantile" else "")
                + f" p{kw['patch_size']}")
        rows.append({"configuration": name, "accepted": f"{m['acceptance_rate']:.3f}",
                     "oracle Dice": f"{m.get('oracle_pseudo_dice_pooled', float('nan')):.3f}",
                     "precision": f"{m.get('oracle_pseudo_precision', float('nan')):.3f}",
                     "recall": f"{m.get('oracle_pseudo_recall', float('nan')):.3f}",
                     "rejected Dice": f"{m.get('oracle_rejected_dice_pooled', float('nan')):.3f}",
                     "with lesion": f"{m.get('oracle_accepted_lesion_fraction', float('nan')):.2f}",
                     "in padding": m.get("patches_in_padding", "-"),
                     "_dice": m.get("oracle_pseudo_dice_pooled", 0.0)})
        print(f"  {name}: oracle Dice {rows[-1]['oracle Dice']}", flush=True)
    table([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    best_model = max(r["_dice"] for r in rows if r["configuration"].startswith("model"))
    best_sim = max(r["_dice"] for r in rows if r["configuration"].startswith("sim"))
    thesis = next(r["_dice"] for r in rows if r["configuration"] == "sim gap-raw absolute p68")
    ratios(best_model_oracle_dice=best_model, best_similarity_oracle_dice=best_sim,
           thesis_oracle_dice=thesis)


if __name__ == "__main__":
    main()
