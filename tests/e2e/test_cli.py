"""The command line itself: ``--version``, ``--help`` that says what each entry point does, and
errors that are one line by default and the whole cause chain with ``COVIDSEG_DEBUG=1``."""

from __future__ import annotations

from covidseg.cli import main


def test_a_wrong_input_folder_creates_no_run_and_no_experiment(tracking_uri, tmp_path, capsys):
    """preprocess on an empty folder and predict on one: one line naming the folder, before any
    run or experiment exists on the server."""
    from mlflow.tracking import MlflowClient

    empty = tmp_path / "empty"
    empty.mkdir()
    client = MlflowClient(tracking_uri)
    for argv, problem in (
            (["preprocess", "--data", str(empty), "--experiment", "never-made"], str(empty)),
            (["predict", "--model", "models:/none/1", "--input", str(empty), "--output",
              str(tmp_path / "out"), "--experiment", "never-made"],
             f"{empty}: empty folder: no CT volume, slice image or DICOM series in it")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"covidseg {argv[0]}: error:"), err
        assert problem in err[0]
        assert client.get_experiment_by_name("never-made") is None
