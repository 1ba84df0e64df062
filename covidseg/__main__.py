"""``python -m covidseg NAME --key value``: the console script as a module (what ``torchrun -m``
launches)."""

from covidseg.cli import console

if __name__ == "__main__":
    console()
