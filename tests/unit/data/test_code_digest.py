"""The code digest in a preprocessed dataset's key covers the modules that shape it: a change to
any of them re-processes instead of reusing a stale cache (covidseg.data.preprocess.CODE)."""

from pathlib import Path

from covidseg.data import preprocess


def test_every_module_of_the_layouts_package_is_in_the_digest():
    here = Path(preprocess.__file__).parent
    layouts = {p.relative_to(here).as_posix() for p in (here / "layouts").glob("*.py")}
    assert layouts and layouts <= set(preprocess.CODE)
    assert all((here / name).is_file() for name in preprocess.CODE)
