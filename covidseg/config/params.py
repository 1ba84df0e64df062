"""The parameter declaration every entry point's config is made of (:func:`param`: default,
help, choices, Optuna search range), the options all of them share (:class:`CommonConfig`), and
the reading of a parameter's text (:func:`parse_value`, thresholds, ``tta``)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from covidseg.base.errors import ConfigError
from covidseg.base.redact import redact


def param(default, help: str, choices: tuple | None = None, search: tuple | None = None,
          searched_by_default: bool = True):
    """A parameter: default, help text, allowed values, and its ``tune`` search range
    ``(low, high[, "log"])`` when Optuna may search it (``searched_by_default=False``: only when
    ``tune -P search=`` names it)."""
    return field(default=default, metadata={"help": help, "choices": choices, "search": search,
                                            "searched_by_default": searched_by_default})


def field_default(f):
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def tta_value(text, model_config: dict) -> bool:
    """predict/evaluate's ``tta``: ``true``/``false``, or ``model`` = what the model stored."""
    if str(text).lower() == "model":
        return bool(model_config.get("tta", False))
    return str(text).lower() == "true"


def threshold_value(text, allowed: str | None = None, name: str = "threshold") -> float | None:
    """A decision threshold given as text: a probability in (0, 1), or None for the keyword
    ``allowed`` — ``auto`` (finetune/meanteacher: chosen on the validation cases) or ``model``
    (predict/evaluate: the one stored with the model); None accepts either."""
    if isinstance(text, (int, float)):
        value = float(text)
    elif str(text).strip().lower() in ((allowed,) if allowed else ("auto", "model")):
        return None
    else:
        try:
            value = float(text)
        except ValueError as exc:
            words = allowed or "auto/model"
            raise ConfigError(f"{name}={text!r} is not a probability or {words}") from exc
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name}={text!r} must lie between 0 and 1")
    return value


@dataclass
class CommonConfig:
    data: str = param("demo", "input data: 'demo' (synthetic phantoms), a data folder, or for "
                              "training stages a preprocess run id / runs:/ URI / preprocessed "
                              "folder (a raw folder is preprocessed as its plan says)")
    seed: int = param(0, "random seed (splits, sampling, initialisation)")
    experiment: str = param("", "MLflow experiment name (default: the entry point's name)")
    device: str = param("auto", "compute device", ("auto", "cpu", "cuda"))

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not one of "
                                  f"{', '.join(map(str, choices))}")
            if f.name == "threshold":  # finetune/meanteacher: auto; predict/evaluate: model
                threshold_value(value, "model" if f.default == "model" else "auto")
        if getattr(self, "alias", "") and not getattr(self, "register_as", ""):
            raise ConfigError(f"alias={self.alias} needs register_as=NAME (an alias names a "
                              "registered version)")

    def to_params(self) -> dict[str, str]:
        """Parameters as MLflow records them (strings; '' for not given; credentials in a URL
        redacted: a logged parameter never holds a password)."""
        return {k: redact(_fmt(v)) for k, v in asdict(self).items()}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)



def parse_value(f, raw: str):
    """Convert a command-line / MLflow string to the field's type."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            low = str(raw).strip().lower()
            if low in ("true", "1", "yes", "y", "on"):
                return True
            if low in ("false", "0", "no", "n", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            as_float = float(raw)
            if as_float != int(as_float):
                raise ValueError(raw)
            return int(as_float)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{f.name}={raw!r} is not a valid {kind}") from exc
    return str(raw)


def viewers_param(what: str):
    return param(3, f"{what} logged as a scrollable HTML slice viewer, viewers/CASE.html (CT, "
                    "truth and prediction overlays, the Dice of each slice; 0: none)")
