"""covidseg: label-efficient COVID-19 lung-infection segmentation in chest CT, tracked in MLflow."""

__version__ = "0.1.0"

import os as _os

# MLflow's usage telemetry (on by default since MLflow 3) sends events to the internet from every
# process that imports mlflow: off, before mlflow is first imported — nothing calls out at run
# time, and offline its failing thread raced with requests (a KeyError on
# _MLFLOW_TELEMETRY_SESSION_ID under benchmarks/server_load.py).  MLFLOW_DISABLE_TELEMETRY=false
# turns it back on.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
