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


class DatabaseUnavailable(CovidsegError):
    """A shared database (grid claims, Optuna studies) did not answer for the whole retry
    window."""


class DiskFull(CovidsegError):
    """A result could not be written (no space left, quota): says what was kept where."""


class CellsFailed(CovidsegError):
    """Cells of a grid failed for good (recorded with their errors; the other cells finished)."""


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


class ImplausibleGeometry(CaseError):
    """Too small to segment, or a size × spacing no CT scanner makes (checked before anything is
    resampled: a wrong spacing would ask gigabytes)."""

    kind = "implausible geometry"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``exc``'s message, at most ``limit`` characters: how a library's
    multi-line error is quoted inside a covidseg one-line error (the full error stays attached as
    its ``__cause__``; ``COVIDSEG_DEBUG=1`` prints the chain)."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return text[:limit]
