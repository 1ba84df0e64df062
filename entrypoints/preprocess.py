"""MLflow entry point `preprocess` (see MLproject and docs/entry-points.md): parameters in,
covidseg call, nothing else."""

import sys

from covidseg.cli import main

if __name__ == "__main__":
    sys.exit(main(name="preprocess"))
