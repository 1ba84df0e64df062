"""``tune``: trials as nested MLflow runs under one parent, two workers sharing one study, and a
worker killed mid-trial leaving the study usable."""





def test_meanteacher_search_space_holds_only_acting_thresholds():
    """tune searches only parameters that act: the pseudo-label threshold of the default method."""
    from covidseg.config import PseudolabelConfig, TuneConfig
    from covidseg.stages.tune import acting_thresholds, search_space

    space = search_space(TuneConfig(target="meanteacher"), {"model": "x"})
    assert "confidence" in space and "pseudo_weight" in space
    assert "target_confidence" not in space  # acts with method=unimatch only: searched when named
    assert not {"sim_low", "sim_high", "sim_min", "accept_fraction"} & set(space)
    assert "confidence" not in search_space(TuneConfig(target="meanteacher"),
                                            {"model": "x", "pseudo": "y"})
    assert acting_thresholds(PseudolabelConfig(source="similarity")) == {"accept_fraction"}
    assert acting_thresholds(PseudolabelConfig(source="similarity", band="absolute")) == \
        {"sim_low", "sim_high"}
    assert acting_thresholds(PseudolabelConfig(source="similarity", band="absolute",
                                               rule="top2-weighted")) == {"sim_min"}


def test_the_decision_threshold_is_searched_only_when_named():
    """``threshold`` (a text parameter: a probability or auto) is searchable as a float in
    [0.2, 0.8], but only when ``search=`` names it; bad values say what is wrong."""
    import pytest

    from covidseg.base.errors import ConfigError
    from covidseg.config import FinetuneConfig, TuneConfig, threshold_value
    from covidseg.stages.tune import search_space

    assert "threshold" not in search_space(TuneConfig(target="finetune"), {})
    space = search_space(TuneConfig(target="finetune", search="lr,threshold"), {})
    assert space["threshold"] == ("float", 0.2, 0.8, False) and set(space) == {"lr", "threshold"}
    assert threshold_value("auto") is None and threshold_value("model") is None
    assert threshold_value(0.35) == 0.35 and threshold_value("0.6") == 0.6
    for bad in ("1.5", "0", "high"):
        with pytest.raises(ConfigError, match="threshold"):
            FinetuneConfig(threshold=bad).validate()


