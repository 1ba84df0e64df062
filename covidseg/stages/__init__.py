"""The stages: every entry point (what resolves ``data=``, decides what MLflow receives and runs
the layers below), and the Stage context they share."""
