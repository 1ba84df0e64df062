"""``covidseg NAME --key value``: the same functions as ``entrypoints/NAME.py`` and ``mlflow run``.

Each entry point's parameters come from its config dataclass (:mod:`covidseg.config`); MLproject
is rendered from the same classes (``covidseg mlproject > MLproject``), so a parameter is
declared once.  Errors a user can fix print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields

from covidseg.base.errors import ConfigError, CovidsegError
from covidseg.base.redact import redact, redact_logging
from covidseg.config import CONFIGS, CommonConfig, field_default, parse_value
from covidseg.stages.registry import RUNNERS, runner


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise ConfigError(f"{self.prog}: {message}")


def description(name: str) -> str:
    """What an entry point does, for ``--help``: the first paragraph of its module's docstring
    (of the function's where a module runs several entry points), read from the source without
    importing it (``--help`` stays fast)."""
    import ast
    import importlib.util

    module, func = RUNNERS[name].split(":")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.origin:
        return ""
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func), None)
    shared = sum(1 for t in RUNNERS.values() if t.split(":")[0] == module) > 1
    text = ((ast.get_docstring(fn) if fn and shared else None) or ast.get_docstring(tree)
            or (ast.get_docstring(fn) if fn else None) or "")
    return text.split("\n\n")[0].replace("\n", " ").strip()


def build_parser(name: str) -> argparse.ArgumentParser:
    cls = CONFIGS[name]
    p = _Parser(prog=f"covidseg {name}", description=description(name) or None)
    for f in fields(cls):
        choices = f.metadata.get("choices")
        help_text = f.metadata.get("help", "")
        if choices:
            help_text += f" ({'/'.join(map(str, choices))})"
        p.add_argument(f"--{f.name}", dest=f.name, default=None, metavar=f.type.upper()
                       if isinstance(f.type, str) else None,
                       help=f"{help_text} [default: {field_default(f)!r}]")
    return p


def parse_config(name: str, argv: list[str]) -> CommonConfig:
    cls = CONFIGS[name]
    ns = build_parser(name).parse_args(argv)
    kwargs = {}
    for f in fields(cls):
        raw = getattr(ns, f.name)
        kwargs[f.name] = field_default(f) if raw is None else parse_value(f, raw)
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg


def run_entry(name: str, cfg: CommonConfig, tracking: bool = True):
    """Run one entry point with its own MLflow run (or without tracking); returns its summary
    (:func:`covidseg.stages.results.summary_of`) with the run's page as ``ui``."""
    from covidseg.stages.registry import input_check
    from covidseg.stages.results import summary_of
    from covidseg.tracking import NullTracker, quiet_mlflow_warnings, start_run
    from covidseg.train import distributed

    fn = runner(name)
    quiet_mlflow_warnings()
    world = distributed.setup(getattr(cfg, "device", "auto"))
    try:
        if world.active and name not in distributed.DATA_PARALLEL:
            raise ConfigError(f"{name} runs in one process: torchrun trains "
                              f"{', '.join(distributed.DATA_PARALLEL)} data-parallel")
        resume = getattr(cfg, "resume", "") or None
        if resume and tracking and world.is_main:
            from covidseg.stages.settings import config_of_run

            cfg = config_of_run(name, resume, world.size)  # the killed run's configuration
        cfg = distributed.broadcast(cfg)  # under torchrun: rank 0's (a resumed run's) config
        if not world.is_main:  # one MLflow run per job: rank 0's; the other ranks never log
            return fn(cfg, NullTracker())
        check = None if resume else input_check(name)
        if check is not None:
            check(cfg)  # before a run (and its experiment) is created
        with start_run(name, cfg.to_params(), cfg.experiment, enabled=tracking,
                       run_id=resume if tracking else None,
                       recipe_filled=getattr(cfg, "recipe_filled", {})) as tracker:
            result = fn(cfg, tracker)
            result = summary_of(result) if result is not None else None
            if result is not None and tracker.enabled:  # the run's page, training view
                from covidseg.tracking.refs import ui_link

                experiment = tracker.client.get_run(tracker.run_id).info.experiment_id
                link = ui_link(experiment, tracker.run_id)
                result = {**result, **({"ui": link} if link else {})}
            return result
    finally:
        distributed.teardown()


def render_mlproject() -> str:
    lines = ["# Generated from covidseg/config/ by `covidseg mlproject > MLproject`: edit the",
             "# dataclasses, not this file (tests check that the two agree).",
             "name: covidseg", "", "conda_env: conda.yaml", "", "entry_points:"]
    for name, cls in CONFIGS.items():
        lines.append(f"  {name}:")
        lines.append("    parameters:")
        args = []
        for f in fields(cls):
            kind = "float" if f.type in ("int", "float") else "string"
            default = field_default(f)
            if isinstance(default, bool):
                default = "true" if default else "false"
            lines.append(f"      {f.name}: {{type: {kind}, default: {_yaml_scalar(default)}}}")
            args.append(f"--{f.name} {{{f.name}}}")
        lines.append(f"    command: \"python entrypoints/{name}.py {' '.join(args)}\"")
    return "\n".join(lines) + "\n"


def render_reference() -> str:
    """``docs/reference.md``: every entry point with what it does and all its parameters (name,
    default, allowed values, meaning), rendered from the config dataclasses like MLproject."""
    lines = ["# Entry-point reference", "",
             "Generated from `covidseg/config/` by `covidseg reference > docs/reference.md`: "
             "edit the dataclasses, not this file (a test checks that the two agree).", "",
             "Every entry point runs three ways with the same parameters: `mlflow run . -e NAME "
             "--env-manager local -P key=value`, `covidseg NAME --key value`, `python "
             "entrypoints/NAME.py --key value`. What each logs is in docs/entry-points.md.", ""]
    lines += [f"- [{name}](#{name})" for name in CONFIGS] + [""]
    for name, cls in CONFIGS.items():
        lines += [f"## {name}", "", _markdown(description(name) or (cls.__doc__ or "").strip()),
                  "",
                  "| parameter | default | values | meaning |", "| --- | --- | --- | --- |"]
        for f in fields(cls):
            default = field_default(f)
            if isinstance(default, bool):
                default = "true" if default else "false"
            choices = f.metadata.get("choices")
            values = ", ".join(f"`{c}`" for c in choices if c != "") if choices else ""
            shown = f"`{default}`" if default != "" else ""
            meaning = f.metadata.get("help", "").replace("|", "\\|")
            lines.append(f"| `{f.name}` | {shown} | {values} | {meaning} |")
        lines.append("")
    lines += ["## Commands for the group server", ""]
    for command, fn in (("covidseg add-member NAME", add_member_command),
                        ("covidseg tidy [EXPERIMENT …]", tidy_command)):
        lines += [f"### `{command}`", "", _markdown(" ".join(fn.__doc__.split()[1:])
                                                     .split(": ", 1)[-1]), ""]
    return "\n".join(lines)


def _markdown(text: str) -> str:
    """A docstring paragraph as Markdown: Sphinx roles and double backticks to code spans."""
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _yaml_scalar(v) -> str:
    s = str(v)
    return f'"{s}"'


def main(argv: list[str] | None = None, name: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if name is None:
        if argv and argv[0] in ("-V", "--version"):
            from covidseg import __version__

            print(f"covidseg {__version__}")
            return 0
        if not argv or argv[0] in ("-h", "--help"):
            print("usage: covidseg NAME [--key value ...]\n\nentry points: "
                  + ", ".join(CONFIGS) + "\n\n`covidseg NAME --help` lists a NAME's parameters; "
                  "`covidseg mlproject` prints the MLproject file, `covidseg reference` the "
                  "parameter reference (docs/reference.md), `covidseg add-member NAME` makes "
                  "NAME a member of the group server (as its admin), `covidseg tidy "
                  "[EXPERIMENT …]` marks runs whose process died FAILED.")
            return 0
        name, argv = argv[0], argv[1:]
    if name == "mlproject":
        sys.stdout.write(render_mlproject())
        return 0
    if name == "reference":
        sys.stdout.write(render_reference())
        return 0
    if name == "add-member":
        return add_member_command(argv)
    if name == "tidy":
        return tidy_command(argv)
    logging.basicConfig(level=os.environ.get("COVIDSEG_LOG", "INFO"),
                        format="%(levelname)s %(name)s: %(message)s")
    redact_logging()  # no log line shows a password
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        if name not in CONFIGS:
            raise ConfigError(f"unknown entry point {name!r}; choose one of {', '.join(CONFIGS)}")
        cfg = parse_config(name, argv)
        result = run_entry(name, cfg)
    except CovidsegError as exc:
        if os.environ.get("COVIDSEG_DEBUG", "") not in ("", "0"):  # the whole chain, causes too
            import traceback

            print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
        print(f"covidseg {name}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"covidseg {name}: interrupted", file=sys.stderr)
        return 130
    if isinstance(result, dict):
        print(f"covidseg {name}: done " + " ".join(f"{k}={redact(str(v))}"
                                                   for k, v in result.items()))
    return 0


def add_member_command(argv: list[str]) -> int:
    """``covidseg add-member NAME``: as the group server's admin (MLFLOW_TRACKING_USERNAME /
    _PASSWORD), make NAME a member (:mod:`covidseg.tracking.members`); a new login's password
    from ``COVIDSEG_MEMBER_PASSWORD``, else asked for."""
    from covidseg.tracking.client import tracking_uri
    from covidseg.tracking.members import add_member

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: covidseg add-member NAME   (as the server's admin: MLFLOW_TRACKING_URI, "
              "MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD; a new login's password in "
              "COVIDSEG_MEMBER_PASSWORD or typed)", file=sys.stderr)
        return 2
    password = os.environ.get("COVIDSEG_MEMBER_PASSWORD")
    try:
        if password is None and sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"password for {argv[0]} (if new, 12+ characters): ")
        print(f"covidseg add-member: {add_member(argv[0], password, tracking_uri())}")
    except CovidsegError as exc:
        print(f"covidseg add-member: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    return 0


def tidy_command(argv: list[str]) -> int:
    """``covidseg tidy [EXPERIMENT …]``: mark FAILED the RUNNING runs whose process stopped
    sending heartbeats (:mod:`covidseg.tracking.heartbeat`); every experiment when none is
    named.  Every stage does it in its own experiment when it starts."""
    from covidseg.tracking.client import connect
    from covidseg.tracking.heartbeat import grace_s, tidy_runs

    try:
        connect()
        closed = tidy_runs(names=argv or None)
    except CovidsegError as exc:
        print(f"covidseg tidy: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(f"covidseg tidy: {len(closed)} run(s) silent for over {grace_s():.0f} s marked FAILED"
          + (": " + " ".join(closed) if closed else ""))
    return 0


def console() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":
    console()
