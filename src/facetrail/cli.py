"""The ``facetrail`` command line. Every command calls the public API in facetrail.engine."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from facetrail import serialize
from facetrail.engine import Facetrail
from facetrail.errors import FacetrailError
from facetrail.records import SearchResult
from facetrail.settings import load_settings
from facetrail.sources import KINDS
from facetrail.store import RunCounts

F = TypeVar("F", bound=Callable[..., Any])

LEADS_NOTICE = (
    "These candidates are investigative leads, not identifications. A trained person must "
    "review every one before any action is taken."
)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def with_engine(f: F) -> F:
    """Open the engine from the group's --home for the command, and close it after."""

    @click.pass_obj
    @functools.wraps(f)
    def wrapper(obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        settings = load_settings(obj["home"], **obj["overrides"])
        with Facetrail(settings) as engine:
            return f(engine, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


class FacetrailGroup(click.Group):
    """Turns facetrail's own errors into one actionable line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FacetrailError as exc:
            if "--json" in sys.argv:
                emit_json({"error": {"code": exc.code, "message": str(exc)}})
            else:
                click.echo(f"error [{exc.code}]: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=FacetrailGroup)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FACETRAIL_HOME",
    help="Data directory (default: $FACETRAIL_HOME, else the platform's user data dir).",
)
@click.option("--workers", type=int, default=None, help="Ingest worker processes (0 = all cores).")
@click.version_option(package_name="facetrail")
@click.pass_context
def main(ctx: click.Context, home: Path | None, workers: int | None) -> None:
    """facetrail: search photo collections you lawfully hold for a face, with provenance."""
    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["workers"] = workers
    ctx.obj = {"home": home, "overrides": overrides}


# -- sources ---------------------------------------------------------------------------------
@main.group()
def sources() -> None:
    """Register and list the collections facetrail may index."""


@sources.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--uri", required=True, help="Folder, manifest file, or WARC/WACZ file or folder.")
@click.option("--lawful-basis", required=True, help="Legal basis for holding and searching it.")
@click.option("--purpose", required=True, help="What the collection is held for.")
@click.option("--retention-days", type=click.IntRange(min=1), default=None)
@json_option
@with_engine
def sources_add(
    engine: Facetrail, name: str, kind: str, uri: str, lawful_basis: str, purpose: str,
    retention_days: int | None, as_json: bool,
) -> None:
    """Register a source with its lawful basis, purpose and retention."""
    row = engine.add_source(
        name, kind, uri, lawful_basis=lawful_basis, purpose=purpose,
        retention_days=retention_days,
    )
    if as_json:
        emit_json(_source_dict(row))
    else:
        click.echo(f"source {row.name!r} registered: {row.kind} at {row.uri}")


@sources.command("list")
@json_option
@with_engine
def sources_list(engine: Facetrail, as_json: bool) -> None:
    """List registered sources."""
    rows = engine.sources()
    if as_json:
        emit_json([_source_dict(r) for r in rows])
        return
    table = Table("name", "kind", "uri", "lawful basis", "purpose", "retention (days)")
    for r in rows:
        retention = str(r.retention_days or "-")
        table.add_row(r.name, r.kind, r.uri, r.lawful_basis, r.purpose, retention)
    Console().print(table)


def _source_dict(row: Any) -> dict[str, Any]:
    return {
        "name": row.name, "kind": row.kind, "uri": row.uri, "lawful_basis": row.lawful_basis,
        "purpose": row.purpose, "retention_days": row.retention_days,
        "created_at": row.created_at, "created_by": row.created_by,
    }


# -- ingest ----------------------------------------------------------------------------------
@main.command()
@click.argument("target")
@click.option("--source", "source_name", default=None,
              help="Ingest TARGET (a path) into this existing source.")
@json_option
@with_engine
def ingest(engine: Facetrail, target: str, source_name: str | None, as_json: bool) -> None:
    """Index a registered source (TARGET is its name), or a path into --source."""
    name, paths = (source_name, [target]) if source_name else (target, None)
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=True, disable=as_json,
    ) as bar:
        task = bar.add_task("starting workers", total=None)

        def show(c: RunCounts, total: int | None) -> None:
            bar.update(task, completed=c.items, total=total, description=(
                f"{c.images_new} new images, {c.duplicates} duplicates, "
                f"{c.skipped} unchanged, {c.faces} faces, {c.errors} errors"
            ))

        report = engine.ingest(name, paths, progress=show)
    if as_json:
        emit_json(serialize.ingest_report(report))
        return
    click.echo(
        f"ingested {report.source!r} in {report.seconds:.1f}s: {report.items} items, "
        f"{report.images_new} new images, {report.duplicates} duplicates, "
        f"{report.skipped} unchanged, {report.faces} faces, {report.errors} errors"
    )
    if report.errors:
        click.echo(f"see them with: facetrail errors --source {report.source}")


# -- search ----------------------------------------------------------------------------------
@main.command()
@click.argument("probe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--case", "case_ref", required=True, help="Case reference; recorded in the audit.")
@click.option("--purpose", required=True, help="Why this search is made; recorded in the audit.")
@click.option("--top", type=click.IntRange(min=1), default=None, help="Candidates per face.")
@click.option("--threshold", type=float, default=None, help="Minimum score (default 0.45).")
@click.option("--min-quality", type=click.FloatRange(0, 1), default=None,
              help="Leave out indexed faces of lower quality (default 0.1; 0 includes all).")
@click.option("--face", type=click.IntRange(min=0), default=None,
              help="Search probe face N (0 = largest, the default).")
@click.option("--all-faces", is_flag=True, help="Search every face of the probe.")
@json_option
@with_engine
def search(
    engine: Facetrail, probe: Path, case_ref: str, purpose: str, top: int | None,
    threshold: float | None, min_quality: float | None, face: int | None, all_faces: bool,
    as_json: bool,
) -> None:
    """Find indexed faces like the one in PROBE. Results are leads, not identifications."""
    result = engine.search(
        probe, case_ref=case_ref, purpose=purpose, top=top, threshold=threshold,
        min_quality=min_quality, face=face, all_faces=all_faces,
    )
    if as_json:
        emit_json(serialize.search_result(result))
    else:
        print_search(result)


def print_search(result: SearchResult) -> None:
    """A table of candidates; each row is followed by the places the image was seen, on
    lines of their own so that long paths and URLs stay readable at any width."""
    echo = click.echo
    echo(f"!! {LEADS_NOTICE}")
    faces = result.probe.faces
    echo(
        f"probe {result.probe.sha256[:16]}: {len(faces)} face(s); searched "
        + ", ".join(f"face {i} (box {list(faces[i].box)})" for i in result.probe.searched_faces)
        + f" among {result.gallery_faces} indexed faces."
    )
    echo(
        f"score = 1 - descriptor distance; shown when >= {result.threshold} "
        f"and the indexed face's quality >= {result.min_quality} "
        "(higher is more alike; docs/scores.md)."
    )
    for i in result.probe.searched_faces:
        if faces[i].quality < result.min_quality:
            echo(f"warning: probe face {i} is small or blurred (quality {faces[i].quality:.2f});"
                 " its scores are less reliable.")
    if not result.candidates:
        echo("no candidate scored above the threshold.")
    else:
        echo("")
        echo(f"{'face':>4} {'rank':>4} {'score':>6} {'quality':>7} {'face_id':>8}  "
             f"{'box (x, y, w, h)':<22} image")
    for c in result.candidates:
        box = ", ".join(map(str, c.box))
        echo(
            f"{c.probe_face:>4} {c.rank:>4} {c.score:>6.3f} {c.quality:>7.2f} {c.face_id:>8}  "
            f"{box:<22} {c.image.sha256[:16]} ({c.image.width}x{c.image.height})"
        )
        for a in c.appearances:
            echo(f"{'':>12}seen in {a.source}: {a.location}")
            if a.source_url:
                echo(f"{'':>14}image url: {a.source_url}")
            for page in a.page_urls:
                echo(f"{'':>14}on page:   {page}")
            if a.captured_at:
                echo(f"{'':>14}captured:  {a.captured_at}")
    echo("")
    echo(f"audit record #{result.audit_id} written (case and purpose recorded).")


# -- errors and stats ------------------------------------------------------------------------
@main.command()
@click.option("--source", "source_name", default=None)
@json_option
@with_engine
def errors(engine: Facetrail, source_name: str | None, as_json: bool) -> None:
    """Every item that could not be ingested, and why."""
    rows = engine.errors(source_name)
    if as_json:
        emit_json([serialize.error_row(e) for e in rows])
        return
    if not rows:
        click.echo("no ingest errors.")
        return
    table = Table("source", "location", "code", "reason", "run")
    for e in rows:
        table.add_row(e.source, e.location, e.code, e.reason, str(e.run_id))
    Console(width=200).print(table)


@main.command()
@json_option
@with_engine
def stats(engine: Facetrail, as_json: bool) -> None:
    """Counts of sources, images, appearances, faces, errors and searches."""
    data = engine.stats()
    if as_json:
        emit_json(data)
        return
    for key in ("home", "model", "sources", "images", "appearances", "faces", "index_faces",
                "images_without_faces", "errors", "searches", "ingest_runs"):
        click.echo(f"{key:>21}: {data[key]}")
    for s in data["per_source"]:
        click.echo(
            f"  {s['source']} ({s['kind']}): {s['images']} images, {s['appearances']} "
            f"appearances, {s['errors']} errors"
        )


# -- index -----------------------------------------------------------------------------------
@main.group()
def index() -> None:
    """Inspect or rebuild the vector index (it is derived from the store)."""


@index.command("rebuild")
@with_engine
def index_rebuild(engine: Facetrail) -> None:
    """Rebuild the index from the store."""
    report = engine.index.rebuild()
    click.echo(f"index rebuilt from the store: {engine.index.size} faces")
    if not report.swapped:
        click.echo(report.message)


@index.command("optimize")
@json_option
@with_engine
@click.pass_context
def index_optimize(ctx: click.Context, engine: Facetrail, as_json: bool) -> None:
    """Rebuild the index in the tier chosen for the gallery's size and memory budget.

    An approximate index is used only if its recall@10 against exact search, measured now on
    sampled queries, reaches the floor (index_recall_floor); otherwise the previous index
    stays and the command exits with status 1."""
    report = engine.index.optimize()
    if as_json:
        emit_json(serialize.optimize_report(report))
    else:
        click.echo(report.message)
        if report.nprobe is not None:
            click.echo(
                f"search settings: nprobe {report.nprobe}, efSearch {report.ef_search}, "
                f"shortlist {report.shortlist_factor} x k re-ranked exactly; "
                f"took {report.seconds:.1f} s"
            )
    if not report.swapped:
        ctx.exit(1)


@index.command("info")
@json_option
@with_engine
def index_info(engine: Facetrail, as_json: bool) -> None:
    """The index's type, size, memory and the recall measured when it was built."""
    info = engine.index.info()
    if as_json:
        emit_json(serialize.index_info(info))
        return
    rows = [
        ("tier", f"{info.tier} ({info.structure})"),
        ("faces", f"{info.faces:,}"),
        ("memory", f"{info.memory_bytes / 2**20:,.1f} MiB, "
                   f"{info.memory_per_face:.1f} bytes per face"),
    ]
    if info.rerank_bytes:
        rows.append(("re-rank vectors", f"{info.rerank_bytes / 2**20:,.1f} MiB on disk "
                     "(memory-mapped float32 and ids)"))
    recall = (f"{info.recall_at_10} on {info.recall_queries} sampled queries (lower bound "
              f"{info.recall_at_10_lower})"
              if info.recall_queries else f"{info.recall_at_10} (exact search)")
    rows.append(("recall@10", recall))
    if info.nprobe is not None:
        rows.append(("search", f"nprobe {info.nprobe}, efSearch {info.ef_search}, "
                     f"shortlist {info.shortlist_factor} x k"))
    if info.built_at:
        rows.append(("built", f"{info.built_at} in {info.build_seconds} s"))
    rows.append(("planned tier", info.planned_tier))
    if info.last_optimize:
        rows.append(("last optimize", info.last_optimize))
    for key, value in rows:
        click.echo(f"{key:>15}: {value}")
