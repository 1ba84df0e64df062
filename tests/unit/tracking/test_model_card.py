"""The model card's text from given values (no server): data and fingerprint, plan, the scores
table with its conventions, intended use and limits."""

from covidseg.tracking.model_card import CARD_LIMIT, model_card

MODEL = {"model": {"arch": "unet", "encoder": "resnet18", "members": 1},
         "entry_point": "finetune", "dataset_key": "3f9a0c",
         "preprocess": {"dataset": "auto", "image_size": 64, "window_min": -1250.0,
                        "window_max": 250.0},
         "intensity_modes": ["hu"], "lung_methods": ["classical"],
         "training": {"init": "scratch", "strategy": "all", "loss": "ce+dice", "batch_size": "8",
                      "lr": "0.0002", "seed": "0", "data": "/home/someone/cohort"},
         "threshold": 0.45}
METRICS = {"final_val_volume_dice": 0.71234, "final_val_volume_nsd_area": 0.8, "test_volumes": 2,
           "test_volume_dice": 0.65432, "test_volume_hd95": 12.345, "train_volumes": 4,
           "val_volumes": 2, "threshold": 0.45, "final_train_volume_dice": 0.9}


def test_the_card_states_data_fingerprint_plan_scores_use_and_limits():
    card = model_card(MODEL, METRICS, name="covid-unet", run_id="abc123",
                      dataset={"name": "demo-cohort", "digest": "3f9a0c", "source_run": "pre9"},
                      fingerprint={"fp_n_labelled": 6.0, "fp_n_unlabelled": 3.0,
                                   "fp_n_slices": 150.0, "fp_spacing_xy_median": 0.737,
                                   "fp_lesion_fraction_mean": 0.1234},
                      plan={"kind": "2d", "epochs": "3", "iterations_per_epoch": "6",
                            "total_iterations": "18"})
    assert card.startswith("# covid-unet: COVID-19 lesion segmentation (unet / resnet18)\n")
    assert "run `abc123`; decision threshold 0.45." in card
    assert ("- Dataset: `demo-cohort` (preprocess run `pre9`); fingerprint (content key) "
            "`3f9a0c`") in card
    assert "- Cases: 4 training, 2 validation, 2 test" in card
    assert ("- Fingerprint: 6 labelled and 3 unlabelled cases, 150 slices; in-plane spacing "
            "(median) 0.737 mm; lesion fraction of the lungs (mean) 0.123") in card
    assert "window [-1250.0, 250.0] HU" in card
    assert "intensity hu; lung extraction classical" in card
    assert "- Plan (2d): 3 epochs of 6 iterations, 18 optimiser steps in all" in card
    assert "- Training: init scratch, strategy all, loss ce+dice, batch_size 8, lr 0.0002" in card
    # the scores: validation and test rows, only the columns some split has, HD95 in mm
    assert "| split | volume Dice | NSD area (3 mm) | HD95 (mm) |" in card
    assert "| validation | 0.7123 | 0.8000 | – |" in card
    assert "| test (2 cases) | 0.6543 | – | 12.35 |" in card
    assert "original grid" in card and "optimistic" in card
    assert "Not a medical device" in card
    assert "synthetic demo phantoms" in card and "4 labelled cases" in card
    assert "/home/someone" not in card  # the training data's path is not the card's business
    assert len(card) < CARD_LIMIT


def test_a_cross_validation_card_scores_out_of_fold_and_a_bare_one_says_what_it_lacks():
    cv = model_card({**MODEL, "model": {"arch": "unet", "encoder": "resnet18", "members": 3},
                     "ensemble_of": ["a", "b", "c"]},
                    {"cv_volume_dice": 0.6, "cv_folds": 3.0, "cv_slice_dice_thravg": 0.55})
    assert "(unet / resnet18 × 3)" in cv and "An ensemble of 3 fold models" in cv
    assert "| validation (out-of-fold, 3 folds) | 0.6000 | 0.5500 |" in cv
    assert "Dataset: `unknown`; fingerprint (content key) `3f9a0c`" in cv
    bare = model_card({"model": {"arch": "fpn", "encoder": "resnet34"}}, {})
    assert "No validation or test scores recorded." in bare
    assert "fingerprint (content key) `unknown`" in bare and "## Plan" not in bare
    assert "synthetic" not in bare
