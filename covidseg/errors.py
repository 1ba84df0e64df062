"""Errors are part of the interface: one exception type per kind of bad input.

Every error renders as one line that names the file (or parameter) and the problem.
Batch steps catch :class:`CaseError`, record the case as failed and go on (unless
``strict=true``); the command line prints ``covidseg NAME: error: <message>`` and exits 2.
"""

from __future__ import annotations


class CovidsegError(Exception):
    """Base class of every error covidseg reports to a user as one line."""


class ConfigError(CovidsegError):
    """A parameter is missing, malformed or contradicts another one."""


class TrackingUnavailable(CovidsegError):
    """The MLflow tracking server cannot be reached (checked before any work starts)."""


class TrainingDiverged(CovidsegError):
    """The training loss became NaN or infinite."""


class NotImplementedYet(CovidsegError):
    """An entry point declared in MLproject whose implementation has not landed yet."""


class CaseError(CovidsegError):
    """Bad input for one case: names the case, the file and the problem."""

    kind = "bad input"

    def __init__(self, path, problem: str, case_id: str | None = None):
        self.path = str(path) if path is not None else ""
        self.problem = " ".join(str(problem).split())  # always one line
        self.case_id = case_id
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.path or (self.case_id or "<unknown>")
        return f"{where}: {self.problem}"


class UnreadableFile(CaseError):
    kind = "unreadable file"


class MissingInput(CaseError):
    kind = "missing input"


class ShapeMismatch(CaseError):
    kind = "shape mismatch"


class GeometryMismatch(CaseError):
    kind = "geometry mismatch"


class NonBinaryMask(CaseError):
    kind = "non-binary mask"


class EmptyMask(CaseError):
    kind = "empty mask"


class NaNValues(CaseError):
    kind = "NaN values"


class NotHounsfield(CaseError):
    kind = "not HU"


class MissingSpacing(CaseError):
    kind = "missing spacing"
