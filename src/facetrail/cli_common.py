"""What the command line's modules share: the --json option, opening the engine for a
command, printing JSON."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from facetrail.engine import Facetrail
from facetrail.settings import load_settings

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def with_engine(f: F) -> F:
    """Open the engine from the group's --home for the command, and close it after."""

    wants_actor = "actor" in inspect.signature(f).parameters

    @click.pass_obj
    @functools.wraps(f)
    def wrapper(obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        settings = load_settings(obj["home"], **obj["overrides"])
        with Facetrail(settings) as engine:
            if wants_actor:  # the local operator, acting for the group's --org
                kwargs["actor"] = engine.actor(org=obj["org"])
            return f(engine, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


JSON_OUT = "facetrail.json_out"
"""Key in the click context's ``meta`` of the stream JSON goes to, with ``--json``: the
command's standard output, which nothing else may write to (facetrail.cli.FacetrailGroup)."""


def emit_json(value: Any) -> None:
    ctx = click.get_current_context(silent=True)
    out = ctx.meta.get(JSON_OUT) if ctx is not None else None
    click.echo(json.dumps(value, indent=2, ensure_ascii=False), file=out)
