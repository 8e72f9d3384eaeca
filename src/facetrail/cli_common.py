"""What the command line's modules share: the --json option, opening the engine for a
command (an existing data directory, unless the command creates one), printing JSON."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar, overload

import click

from facetrail.engine import Facetrail
from facetrail.errors import NotFoundError
from facetrail.settings import Settings, load_settings
from facetrail.store import default_store_url, sqlite_path

ID = click.IntRange(0, 2**63 - 1)
"""An id on the command line: within the stores' 64-bit integers (else a usage error)."""

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


@overload
def with_engine(f: F) -> F: ...
@overload
def with_engine(*, creates: bool) -> Callable[[F], F]: ...
def with_engine(f: F | None = None, *, creates: bool = False) -> F | Callable[[F], F]:
    """Open the engine from the group's --home for the command, and close it after. Only a
    command that ``creates`` a data directory (the first steps of a new one: 'sources add',
    'users add', 'orgs add') makes one that does not exist; any other refuses, so that a
    mistyped --home is never a new, empty data directory."""
    if f is None:
        return functools.partial(with_engine, creates=creates)
    wants_actor = "actor" in inspect.signature(f).parameters

    @click.pass_obj
    @functools.wraps(f)
    def wrapper(obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        settings = load_settings(obj["home"], **obj["overrides"])
        if not creates:
            require_data(settings)
        with Facetrail(settings) as engine:
            if wants_actor:  # the local operator, acting for the group's --org
                kwargs["actor"] = engine.actor(org=obj["org"])
            return f(engine, *args, **kwargs)

    return wrapper


def require_data(settings: Settings) -> None:
    """Raise NotFoundError if the SQLite store ``settings`` name does not exist (a PostgreSQL
    store cannot be told from a new one before connecting; a wrong URL fails to connect)."""
    url = settings.store_url or default_store_url(settings.home)
    path = sqlite_path(url)
    if path is None or path.exists():
        return
    where = (f"no facetrail data directory at {settings.home}" if settings.store_url is None
             else f"no facetrail store at {path}")
    raise NotFoundError(f"{where} (it would be created by 'facetrail sources add'); check "
                        "--home, --store and FACETRAIL_HOME")


JSON_OUT = "facetrail.json_out"
"""Key in the click context's ``meta`` of the stream JSON goes to, with ``--json``: the
command's standard output, which nothing else may write to (facetrail.cli.FacetrailGroup)."""


def emit_json(value: Any) -> None:
    ctx = click.get_current_context(silent=True)
    out = ctx.meta.get(JSON_OUT) if ctx is not None else None
    click.echo(json.dumps(value, indent=2, ensure_ascii=False), file=out)
