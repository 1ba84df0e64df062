"""The errors' old address: models logged before covidseg/base/ existed carry a pyfunc file that
imports ``covidseg.errors.CovidsegError`` (tests/unit/inference/test_logged_models.py loads
such copies).  New code imports :mod:`covidseg.base.errors`."""

from covidseg.base.errors import *  # noqa: F401,F403
from covidseg.base.errors import CovidsegError  # noqa: F401
