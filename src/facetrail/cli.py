"""The ``facetrail`` command line. Every command calls the public API in facetrail.engine."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
from facetrail.accounts import ROLES, Actor
from facetrail.audit import Checkpoint
from facetrail.calibration import beyond_measured, expected_in_words, rate_in_words
from facetrail.casework import DECISIONS
from facetrail.cli_common import (
    ID,
    JSON_OUT,
    F,
    emit_json,
    json_option,
    require_data,
    with_engine,
)
from facetrail.cli_rights import COMMANDS as RIGHTS_COMMANDS
from facetrail.cli_rights import echo_erasure
from facetrail.engine import Facetrail
from facetrail.errors import FacetrailError, Interrupted
from facetrail.faces.base import SCORE_MEANING
from facetrail.orgs import DEFAULT_ORG
from facetrail.pipeline.reembed import ReembedProgress
from facetrail.records import BuildReport, SearchResult
from facetrail.settings import load_settings
from facetrail.sources import KINDS
from facetrail.store import AuditQuery, JobRow, RunCounts, SearchRow, UserRow

LEADS_NOTICE = (
    "These candidates are investigative leads, not identifications. A trained person must "
    "review every one before any action is taken."
)


class FacetrailGroup(click.Group):
    """Turns facetrail's own errors into one actionable line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        if "--json" not in sys.argv:
            return self._invoke(ctx)
        # Standard output carries the JSON document alone: anything else printed meanwhile
        # (by a library: Ray prints its cluster's errors there) goes to standard error.
        ctx.meta[JSON_OUT] = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FacetrailError as exc:
            if "--json" in sys.argv:
                emit_json({"error": {"code": exc.code, "message": str(exc)}})
            else:
                click.echo(f"error [{exc.code}]: {exc}", err=True)
            # Stopped by the user (Ctrl-C): the shell's convention for SIGINT, 128 + 2.
            ctx.exit(130 if isinstance(exc, Interrupted) else 2)


@click.group(cls=FacetrailGroup)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="FACETRAIL_HOME",
    help="Data directory (default: $FACETRAIL_HOME, else the platform's user data dir). "
    "Only 'sources add', 'users add' and 'orgs add' create one that does not exist.",
)
@click.option(
    "--store", "store_url", metavar="URL", default=None,
    help="The store: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: "
    "$FACETRAIL_STORE_URL, else sqlite:///<home>/facetrail.db).",
)
@click.option("--workers", type=int, default=None, help="Ingest worker processes (0 = all cores).")
@click.option("--org", default=DEFAULT_ORG, show_default=True,
              help="The organisation you act for: searches, case records and what they see "
              "are that organisation's.")
@click.version_option(package_name="facetrail")
@click.pass_context
def main(ctx: click.Context, home: str | None, store_url: str | None,
         workers: int | None, org: str) -> None:
    """facetrail: search photo collections you lawfully hold for a face, with provenance."""
    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["workers"] = workers
    if store_url is not None:
        overrides["store_url"] = store_url
    ctx.obj = {"home": home, "overrides": overrides, "org": org}


# -- sources ---------------------------------------------------------------------------------
@main.group()
def sources() -> None:
    """Register and list the collections facetrail may index."""


@sources.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--uri", required=True,
              help="Of --kind: a folder; a CSV, JSONL or Parquet manifest with a 'path' "
              "column; a WARC/WACZ file or a folder of them. Checked now (its header).")
@click.option("--lawful-basis", required=True, help="Legal basis for holding and searching it.")
@click.option("--purpose", required=True, help="What the collection is held for.")
@click.option("--retention-days", type=click.IntRange(min=1), required=True,
              help="Days an appearance is kept after it was first ingested; "
              "'facetrail retention sweep' erases what is older.")
@click.option("--org", "owner", default=None,
              help="The organisation that owns it (default: the one you act for).")
@json_option
@with_engine(creates=True)
def sources_add(
    engine: Facetrail, name: str, kind: str, uri: str, lawful_basis: str, purpose: str,
    retention_days: int, owner: str | None, as_json: bool, actor: Actor,
) -> None:
    """Register a source with its lawful basis, purpose and retention."""
    row = engine.add_source(
        name, kind, uri, lawful_basis=lawful_basis, purpose=purpose,
        retention_days=retention_days, org=owner or actor.org,
    )
    if as_json:
        emit_json(serialize.source(row))
    else:
        click.echo(f"source {row.name!r} registered: {row.kind} at {row.uri}")


@sources.command("list")
@json_option
@with_engine
def sources_list(engine: Facetrail, as_json: bool) -> None:
    """List registered sources."""
    rows = engine.sources()
    if as_json:
        emit_json([serialize.source(r) for r in rows])
        return
    shared: dict[str, list[str]] = {}
    for share in engine.shares():
        shared.setdefault(share.source, []).append(share.org)
    table = Table("name", "owner", "shared with", "kind", "uri", "lawful basis", "purpose",
                  "retention (days)")
    for r in rows:
        retention = str(r.retention_days or "-")
        table.add_row(r.name, r.org, ", ".join(shared.get(r.name, [])) or "-", r.kind, r.uri,
                      r.lawful_basis, r.purpose, retention)
    Console(width=200).print(table)


@sources.command("share")
@click.argument("name")
@click.option("--with", "org", required=True, help="The organisation to share it with.")
@click.option("--lawful-basis", required=True,
              help="The legal basis for that organisation to search it.")
@click.option("--purpose", required=True, help="What that organisation may search it for.")
@json_option
@with_engine
def sources_share(engine: Facetrail, name: str, org: str, lawful_basis: str, purpose: str,
                  as_json: bool) -> None:
    """Let organisation ORG search source NAME, under a lawful basis and purpose of the
    sharing's own (audited in both organisations' logs)."""
    share = engine.share_source(name, org, lawful_basis=lawful_basis, purpose=purpose)
    if as_json:
        emit_json(serialize.share(share))
    else:
        click.echo(f"source {share.source!r} is shared with {share.org!r}")


@sources.command("unshare")
@click.argument("name")
@click.option("--with", "org", required=True, help="The organisation to stop sharing with.")
@with_engine
def sources_unshare(engine: Facetrail, name: str, org: str) -> None:
    """Stop sharing source NAME with organisation ORG (audited)."""
    engine.unshare_source(name, org)
    click.echo(f"source {name!r} is no longer shared with {org!r}")


# -- organisations ---------------------------------------------------------------------------
@main.group()
def orgs() -> None:
    """The organisations of this deployment: each owns its sources and users."""


@orgs.command("add")
@click.argument("name")
@json_option
@with_engine(creates=True)
def orgs_add(engine: Facetrail, name: str, as_json: bool) -> None:
    """Add an organisation."""
    row = engine.add_org(name)
    if as_json:
        emit_json(serialize.org(row))
    else:
        click.echo(f"organisation {row.name!r} added")


@orgs.command("list")
@json_option
@with_engine
def orgs_list(engine: Facetrail, as_json: bool) -> None:
    """List the organisations, with their sources and users."""
    sources_by_org: dict[str, int] = {}
    for s in engine.sources():
        sources_by_org[s.org] = sources_by_org.get(s.org, 0) + 1
    users_by_org: dict[str, int] = {}
    for u in engine.users():
        users_by_org[u.org] = users_by_org.get(u.org, 0) + 1
    rows = engine.orgs()
    if as_json:
        emit_json([{**serialize.org(o), "sources": sources_by_org.get(o.name, 0),
                    "users": users_by_org.get(o.name, 0)} for o in rows])
        return
    table = Table("organisation", "sources", "users", "created", "by")
    for o in rows:
        table.add_row(o.name, str(sources_by_org.get(o.name, 0)),
                      str(users_by_org.get(o.name, 0)), o.created_at, o.created_by)
    Console().print(table)


@sources.command("retention")
@click.argument("name")
@click.argument("days", type=click.IntRange(min=1))
@json_option
@with_engine
def sources_retention(engine: Facetrail, name: str, days: int, as_json: bool) -> None:
    """Change how long source NAME's appearances are kept after their first ingest (DAYS);
    'facetrail retention sweep' erases what is older."""
    row = engine.set_retention(name, days)
    if as_json:
        emit_json(serialize.source(row))
    else:
        click.echo(f"source {row.name!r} is now kept for {row.retention_days} days")


@sources.command("remove")
@click.argument("name")
@click.option("--reason", required=True, help="Why; kept with the erasure and audited.")
@click.option("--dry-run", is_flag=True, help="Show what would be erased; erase nothing.")
@json_option
@with_engine
def sources_remove(engine: Facetrail, name: str, reason: str, dry_run: bool, as_json: bool,
                   actor: Actor) -> None:
    """Remove source NAME: everything only it reached is erased (faces, images), its
    appearances of images others also reached go, and the source is unregistered."""
    report = engine.remove_source(name, reason=reason, actor=actor, dry_run=dry_run)
    if as_json:
        emit_json(serialize.erasure_report(report))
    else:
        echo_erasure(report)
        if not dry_run:
            click.echo(f"source {name!r} removed")


# -- ingest ----------------------------------------------------------------------------------
@main.command()
@click.argument("target")
@click.option("--source", "source_name", default=None,
              help="Ingest TARGET (a path) into this existing source.")
@json_option
@with_engine
def ingest(engine: Facetrail, target: str, source_name: str | None, as_json: bool) -> None:
    """Index a registered source (TARGET is its name), or a path into --source.

    A path given to a folder source is a folder or an image under it, or a web archive or
    manifest, read as such (never as an image); a manifest or warc source takes paths of its
    own kind only. Every item that cannot be ingested is recorded with why ('facetrail
    errors'), and so is a path with nothing in it (empty_source). Exits 1 if nothing could
    be ingested at all (no item, or only errors); 2 if the command was refused."""
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
    nothing = report.errors >= report.items  # no item found, or none usable
    if as_json:
        emit_json(serialize.ingest_report(report))
        if nothing:
            sys.exit(1)
        return
    click.echo(
        f"ingested {report.source!r} in {report.seconds:.1f}s: {report.items} items, "
        f"{report.images_new} new images, {report.duplicates} duplicates, "
        f"{report.skipped} unchanged, {report.faces} faces, {report.errors} errors, "
        f"{report.gone} gone"
    )
    if report.suppressed:
        click.echo(f"{report.suppressed} face(s) or image(s) suppressed: they match an opt-out "
                   "or were erased, and were not stored")
    if report.errors:
        click.echo(f"see them with: facetrail errors --source {report.source}")
    if nothing:
        click.echo(f"error: nothing was ingested from {report.source!r}: "
                   + ("no item was found" if not report.items else "every item failed")
                   + f"; see why with: facetrail errors --source {report.source}", err=True)
        sys.exit(1)


@main.group()
def jobs() -> None:
    """Ingest jobs queued in the web app or over HTTP; the server runs them ('facetrail
    ingest' runs one here and now)."""


@jobs.command("list")
@click.option("--unfinished", is_flag=True, help="Only queued and running jobs, oldest first.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@json_option
@with_engine
def jobs_list(engine: Facetrail, unfinished: bool, limit: int, as_json: bool) -> None:
    """Ingest jobs, newest first, with their status and progress."""
    rows = engine.jobs(unfinished=unfinished, limit=limit)
    if as_json:
        emit_json([serialize.job(j) for j in rows])
        return
    if not rows:
        click.echo("no ingest jobs.")
        return
    table = Table("job", "source", "status", "by", "created", "progress")
    for j in rows:
        table.add_row(str(j.id), j.source, j.status, j.created_by, j.created_at, _job_progress(j))
    Console(width=160).print(table)


@jobs.command("show")
@click.argument("job_id", type=ID)
@json_option
@with_engine
def jobs_show(engine: Facetrail, job_id: int, as_json: bool) -> None:
    """One ingest job: its paths, status, attempts, runs and progress."""
    job = engine.job(job_id)
    if as_json:
        emit_json(serialize.job(job))
        return
    click.echo(f"job {job.id}: ingest of {job.source!r} "
               f"({', '.join(job.paths) or 'the whole source'}), {job.status}")
    click.echo(f"  created by {job.created_by} at {job.created_at}; started {job.started_at or '-'}"
               f"; finished {job.finished_at or '-'}; {job.attempts} attempt(s); runs "
               f"{', '.join(map(str, job.run_ids)) or '-'}")
    click.echo(f"  {_job_progress(job)}")
    if job.error:
        click.echo(f"  error: {job.error}")


@jobs.command("cancel")
@click.argument("job_id", type=ID)
@json_option
@with_engine
def jobs_cancel(engine: Facetrail, job_id: int, as_json: bool) -> None:
    """Cancel a queued job, or stop a running one (at its next progress write)."""
    job = engine.cancel_job(job_id)
    if as_json:
        emit_json(serialize.job(job))
    else:
        click.echo(f"job {job.id} ({job.source}) cancelled")


def _job_progress(j: JobRow) -> str:
    p = j.progress
    total = p.get("total")
    return (f"{p.get('items', 0)}{f' of {total}' if total is not None else ''} items: "
            f"{p.get('images_new', 0)} new images, {p.get('faces', 0)} faces, "
            f"{p.get('errors', 0)} errors")


# -- face models ------------------------------------------------------------------------------
@main.group()
def models() -> None:
    """The face models a data directory can use, and which one it uses."""


@models.command("list")
@json_option
@with_engine
def models_list(engine: Facetrail, as_json: bool) -> None:
    """Every face model, with the images and faces the store holds for it."""
    rows = engine.model_statuses()
    if as_json:
        emit_json([{"name": m.name, "key": m.key, "active": m.active, "images": m.images,
                    "faces": m.faces, "calibrated": m.calibrated, "problem": m.problem}
                   for m in rows])
        return
    table = Table("", "model", "images", "faces", "calibrated", "key")
    for m in rows:
        table.add_row("*" if m.active else "", m.name, str(m.images), str(m.faces),
                      "yes" if m.calibrated else "no", m.problem or m.key or "")
    Console().print(table)
    click.echo("* = in use; move with 'facetrail reembed --model NAME', then "
               "'facetrail models use NAME'.")


@models.command("add")
@click.argument("name")
@click.option("--embedder", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="ONNX graph: aligned chips (N, 3, S, S) -> (N, dim).")
@click.option("--input-size", type=int, default=112, show_default=True,
              help="Side S of the aligned chip, in pixels.")
@click.option("--mean", type=float, default=127.5, show_default=True,
              help="Subtracted from every 0-255 channel value (float inputs).")
@click.option("--std", type=float, default=127.5, show_default=True,
              help="Then divided into it (float inputs).")
@click.option("--channels", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True)
@click.option("--template", default="arcface", show_default=True,
              help="Five-point alignment template of the chip (scaled to --input-size).")
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default="cosine",
              show_default=True)
@click.option("--detector", default="yunet", show_default=True,
              help="A shipped detector (yunet), or an ONNX file with YuNet's outputs.")
@json_option
@with_engine
def models_add(engine: Facetrail, name: str, embedder: Path, input_size: int, mean: float,
               std: float, channels: str, template: str, metric: str, detector: str,
               as_json: bool) -> None:
    """Declare a face model from your own ONNX files (checked before they are recorded)."""
    model = engine.add_user_model(
        name, embedder, input_size=input_size, mean=mean, std=std, channels=channels,
        template=template, metric=metric,
        detector=detector if detector in ("yunet",) else Path(detector),
    )
    if as_json:
        emit_json({"name": name, "key": model.model.key, "dim": model.model.dim,
                   "metric": model.model.metric})
        return
    click.echo(f"face model {name!r} declared: {model.model.key} ({model.model.dim}-d, "
               f"{model.model.metric}); it is uncalibrated until 'facetrail calibrate'. Move "
               f"a gallery to it with: facetrail reembed --model {name}")


@models.command("use")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Switch even though some images have not been moved to NAME.")
@with_engine
def models_use(engine: Facetrail, name: str, force: bool) -> None:
    """Make NAME the face model searches and ingests use from now on."""
    previous = engine.model_name
    engine.use_model(name, force=force)
    click.echo(f"face model is now {name!r} (was {previous!r}); {engine.index.size} faces "
               "indexed.")


@main.command()
@click.option("--model", "target", required=True, help="Face model to move the gallery to.")
@json_option
@with_engine
def reembed(engine: Facetrail, target: str, as_json: bool) -> None:
    """Analyse every stored image again with another face model, from where it was found.

    The current model stays in use while this runs and after it; switch with 'facetrail
    models use'. Interrupted, it resumes where it stopped."""
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=True, disable=as_json,
    ) as bar:
        task = bar.add_task("starting workers", total=None)

        def show(p: ReembedProgress) -> None:
            bar.update(task, completed=p.done, total=p.total,
                       description=f"images moved; {p.unreadable} unreadable, {p.failed} failed")

        report = engine.reembed(target, progress=show)
    if as_json:
        emit_json({"target": report.target, "key": report.target_key, "images": report.total,
                   "already": report.already, "moved": report.moved, "faces": report.faces,
                   "unreadable": report.unreadable,
                   "failed": [{"sha256": s, "reason": r} for s, r in report.failed],
                   "seconds": report.seconds, "complete": report.complete})
        return
    click.echo(
        f"moved {report.moved} images ({report.faces} faces) to {report.target!r} in "
        f"{report.seconds:.1f}s ({report.images_per_second:.1f} images/s); "
        f"{report.already} were already moved; {report.already + report.moved} of "
        f"{report.total} done."
    )
    for sha in report.unreadable:
        click.echo(f"  not readable where it was found (stays with {engine.model_name!r}): {sha}")
    for sha, reason in report.failed:
        click.echo(f"  could not be analysed: {sha}: {reason}")
    if report.complete:
        click.echo(f"switch to it with: facetrail models use {report.target}")
    else:
        click.echo(f"{report.total - report.already - report.moved} images were not moved; "
                   f"'facetrail models use {report.target} --force' leaves them behind.")


# -- search ----------------------------------------------------------------------------------
@main.command()
@click.argument("probes", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--case", "case_ref", required=True, help="Case reference; recorded in the audit.")
@click.option("--purpose", required=True, help="Why this search is made; recorded in the audit.")
@click.option("--top", type=click.IntRange(min=1), default=None, help="Candidates per face.")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None,
              help="Minimum score, -1 to 1 (default: calibrated for the gallery size, at least "
              "the model's floor).")
@click.option("--min-quality", type=click.FloatRange(0, 1), default=None,
              help="Leave out indexed faces of lower quality (default 0.1; 0 includes all).")
@click.option("--include-low-quality", is_flag=True,
              help="Include small or blurred indexed faces (same as --min-quality 0).")
@click.option("--face", "faces", type=click.IntRange(min=0), multiple=True,
              help="Search probe face N (0 = largest, the default). With several probe "
              "photos, give it once per photo, in order.")
@click.option("--all-faces", is_flag=True, help="Search every face of the probe.")
@click.option("--fusion", type=click.Choice(["mean", "max"]), default=None,
              help="With several probe photos of one person: how they are combined.")
@click.option("--history", is_flag=True,
              help="Also find images no longer where they were seen (shown as gone).")
@json_option
@with_engine
def search(
    engine: Facetrail, probes: tuple[Path, ...], case_ref: str, purpose: str, top: int | None,
    threshold: float | None, min_quality: float | None, include_low_quality: bool,
    faces: tuple[int, ...], all_faces: bool, fusion: str | None, history: bool,
    as_json: bool, actor: Actor,
) -> None:
    """Find indexed faces like the one in PROBES. Several PROBES are photos of one person,
    searched together. Results are leads, not identifications: the search is kept as a case
    record (the probes under the data directory) for another person to review."""
    if include_low_quality:
        min_quality = 0.0
    if len(probes) == 1 and len(faces) > 1:
        raise click.UsageError("one probe photo takes one --face")
    one = len(probes) == 1
    kept = engine.search_probes(
        [p.read_bytes() for p in probes], case_ref=case_ref, purpose=purpose, top=top,
        threshold=threshold, min_quality=min_quality,
        face=faces[0] if one and faces else None, photo_faces=() if one else faces,
        all_faces=all_faces, fusion=fusion, actor=actor, history=history,
    )
    if as_json:
        emit_json({**serialize.search_result(kept.result), "search_id": kept.record.id})
        return
    print_search(kept.result)
    search_id = kept.record.id
    click.echo(f"kept as search #{search_id} of case {kept.record.case_ref!r}: 'facetrail "
               f"searches show {search_id}'. Another person reviews its candidates: 'facetrail "
               f"review {search_id} FACE_ID confirm|reject --note WHY', or in the web app.")


def print_search(result: SearchResult) -> None:
    """A table of candidates; each row is followed by the places the image was seen, on
    lines of their own so that long paths and URLs stay readable at any width."""
    echo = click.echo
    echo(f"!! {LEADS_NOTICE}")
    faces = result.probe.faces
    if result.probes:
        echo(f"{len(result.probes)} probe photos of one person, one face of each, combined by "
             f"{result.fusion}; searched among {result.gallery_faces} indexed faces of quality "
             f">= {result.min_quality}:")
        for n, p in enumerate(result.probes, start=1):
            (face,) = p.searched_faces
            many = (f"; it has {len(p.faces)} faces: pick another with --face, once per photo"
                    if len(p.faces) > 1 else "")
            echo(f"  photo {n} ({p.sha256[:16]}): face {face} (box {list(p.faces[face].box)})"
                 + (" the largest" if face == 0 else "") + many)
    else:
        echo(
            f"probe {result.probe.sha256[:16]}: {len(faces)} face(s); searched "
            + ", ".join(f"face {i} (box {list(faces[i].box)})"
                        for i in result.probe.searched_faces)
            + f" among {result.gallery_faces} indexed faces of quality >= {result.min_quality}."
        )
    echo(
        f"score = {SCORE_MEANING[result.metric]}; shown when >= {result.threshold} "
        f"and the indexed face's quality >= {result.min_quality} "
        "(higher is more alike; docs/scores.md)."
    )
    echo(threshold_line(result))
    for i in result.probe.searched_faces:
        if faces[i].quality < result.min_quality:
            echo(f"warning: probe face {i} is small or blurred (quality {faces[i].quality:.2f});"
                 " its scores are less reliable.")
    if result.candidates:
        echo("")
        echo(f"{'face':>4} {'rank':>4} {'score':>6} {'est. FMR':>9} {'E[false]':>8} "
             f"{'quality':>7} {'face_id':>8}  {'box (x, y, w, h)':<22} image")
    for c in result.candidates:
        box = ", ".join(map(str, c.box))
        fmr = "-" if c.fmr is None else (
            ("~" if c.fmr_extrapolated else "")
            + ("<1e-09" if c.fmr < 1e-9 else f"{c.fmr:.1e}")
        )
        expected = "-" if c.expected_false is None else (
            "<1e-06" if c.expected_false < 1e-6 else f"{c.expected_false:.3g}"
        )
        echo(
            f"{c.probe_face:>4} {c.rank:>4} {c.score:>6.3f} {fmr:>9} {expected:>8} "
            f"{c.quality:>7.2f} {c.face_id:>8}  "
            f"{box:<22} {c.image.sha256[:16]} ({c.image.width}x{c.image.height})"
        )
        if c.fmr is not None and result.calibration is not None:
            resolution = result.calibration.resolution
            echo(f"{'':>12}{rate_in_words(c.fmr, c.fmr_extrapolated, resolution)}")
        for a in c.appearances:
            echo(f"{'':>12}{seen_in(a.source, a.location, a.gone_at)}")
            if a.source_url:
                echo(f"{'':>14}image url: {a.source_url}")
            for page in a.page_urls:
                echo(f"{'':>14}on page:   {page}")
            if a.captured_at:
                echo(f"{'':>14}captured:  {a.captured_at}")
    echo("")
    for line in outcome_lines(result):
        echo(line)
    echo(f"audit record #{result.audit_id} written (case and purpose recorded).")


def outcome_lines(result: SearchResult) -> list[str]:
    """What each face searched found, said in full: a face with no candidate is not left out,
    and the best score under the threshold is given, so a near miss is not read as a clean
    negative."""
    lines = []
    cal = result.calibration
    for o in result.outcomes:
        face = "the combined probe photos" if result.probes else f"probe face {o.probe_face}"
        if o.candidates:
            lines.append(f"{face}: {o.candidates} candidate(s) at or above {result.threshold}.")
            continue
        said = f"{face}: no candidate at or above the threshold {result.threshold}"
        if o.best_below is None:
            lines.append(f"{said}; no face this search may return was near it.")
            continue
        said += f"; the best score below it was {o.best_below:.3f}"
        if o.best_below_fmr is not None and cal is not None:
            said += (" ("
                     + rate_in_words(o.best_below_fmr, o.best_below_extrapolated, cal.resolution)
                     + ")")
        lines.append(said + ". Not evidence that the person is absent from the sources.")
    return lines


def seen_in(source: str, location: str, gone_at: str | None) -> str:
    """Where an image was seen; one no longer there says since when."""
    if gone_at is None:
        return f"seen in {source}: {location}"
    return f"was in {source}: {location} (gone since {gone_at})"


def threshold_line(result: SearchResult) -> str:
    """What the threshold means at this gallery size, or that scores are uncalibrated."""
    cal = result.calibration
    if cal is None:
        return ("scores are NOT calibrated for this model: no false-match rate can be given "
                "(see 'facetrail calibrate').")
    rule = {
        "calibrated": "raised for this gallery size",
        "floor": f"the fixed floor (the calibrated {cal.calibrated_threshold} is lower)",
        "override": "given with --threshold",
        "fixed": "the fixed setting",
    }[result.threshold_rule]
    meaning = expected_in_words(cal.expected_false_at_threshold,
                                beyond_measured(cal.expected_false_at_threshold,
                                                result.gallery_faces, cal.resolution),
                                cal.resolution, result.gallery_faces)
    return (
        f"threshold {result.threshold} ({rule}): {meaning}; expected false candidates per "
        f"search {cal.expected_false_at_threshold:.2g}, target {cal.fpir_target:g}.\n"
        f"est. FMR = chance that an unrelated face scores this high; E[false] = "
        f"{result.gallery_faces} faces x FMR; ~ = extrapolated below {cal.resolution:.1e} "
        f"(calibration: {cal.source}; docs/calibration.md)."
    )


# -- searches kept as case records, and their review ----------------------------------------
@main.group()
def searches() -> None:
    """Searches kept as case records (from the CLI and the web app alike)."""


@searches.command("list")
@click.option("--case", "case_ref", default=None, help="Only searches of this case.")
@click.option("--mine", is_flag=True, help="Only your own searches (the OS user's).")
@click.option("--pending", is_flag=True,
              help="Your review queue: searches by others with candidates not yet reviewed.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@json_option
@with_engine
def searches_list(engine: Facetrail, case_ref: str | None, mine: bool, pending: bool,
                  limit: int, as_json: bool, actor: Actor) -> None:
    """Kept searches, newest first."""
    if pending and (case_ref or mine):
        raise click.UsageError("--pending lists searches by others; leave out --case and --mine")
    rows = (engine.review_queue(limit=limit, actor=actor) if pending else
            engine.searches(case_ref=case_ref, by=actor.name if mine else None,
                            limit=limit, actor=actor))
    if as_json:
        emit_json([serialize.search_summary(s) for s in rows])
        return
    if not rows:
        click.echo("no searches.")
        return
    table = Table("search", "when (UTC)", "by", "case", "purpose", "candidates", "unreviewed")
    for s in rows:
        table.add_row(str(s.id), s.created_at, s.actor, s.case_ref, s.purpose,
                      str(s.candidates), str(s.pending))
    Console(width=160).print(table)


@searches.command("show")
@click.argument("search_id", type=ID)
@json_option
@with_engine
def searches_show(engine: Facetrail, search_id: int, as_json: bool, actor: Actor) -> None:
    """A kept search with its candidates, where each was seen, and their reviews."""
    record = engine.search_record(search_id, actor=actor)
    if as_json:
        emit_json(serialize.search_record(record.search, record.reviews))
        return
    print_record(record.search, serialize.search_record(record.search, record.reviews))


@searches.command("report")
@click.argument("case_ref")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@with_engine
def searches_report(engine: Facetrail, case_ref: str, fmt: str, output: Path | None,
                    actor: Actor) -> None:
    """Every search of a case with its candidates, appearances and reviews (as the web app's
    case report): JSON, or CSV with one row per candidate appearance."""
    records = [serialize.search_record(r.search, r.reviews)
               for r in engine.case_records(case_ref, actor=actor)]
    text = (json.dumps(serialize.case_report(case_ref, records), indent=2, ensure_ascii=False)
            + "\n" if fmt == "json" else serialize.case_report_csv(records))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"{len(records)} searches of case {case_ref!r} written to {output}", err=True)


def print_record(search: SearchRow, record: dict[str, Any]) -> None:
    """A kept search: who searched, for what, and each candidate with its reviews."""
    echo = click.echo
    result = record["result"]
    echo(f"search #{search.id} of case {search.case_ref!r} (purpose: {search.purpose}) by "
         f"{search.actor} at {search.created_at}; audit record #{search.audit_id}")
    echo(f"probe {search.probe_sha256[:16]} face {search.probe_face}; threshold "
         f"{result.get('threshold')}; {search.candidates} candidate(s), {search.pending} not "
         "yet reviewed")
    echo(f"!! {LEADS_NOTICE}")
    for c in result["candidates"]:
        if "erased" in c:
            echo(f"{c['rank']:>4} score {c['score']:.3f}  face {c['face_id']}  candidate "
                 f"{serialize.erased_note(c)}")
            continue
        echo(f"{c['rank']:>4} score {c['score']:.3f}  face {c['face_id']}  image "
             f"{c['image']['sha256'][:16]}")
        for a in c["appearances"]:
            echo(f"{'':>8}{seen_in(a['source'], a['location'], a.get('gone_at'))}")
        for r in c["reviews"]:
            echo(f"{'':>8}{r['decision']} by {r['reviewer']} at {r['at']}: {r['note']}")


@main.command()
@click.argument("search_id", type=ID)
@click.argument("face_id", type=ID)
@click.argument("decision", type=click.Choice(DECISIONS))
@click.option("--note", required=True, help="Why; kept with the decision and in the audit.")
@json_option
@with_engine
def review(engine: Facetrail, search_id: int, face_id: int, decision: str, note: str,
           as_json: bool, actor: Actor) -> None:
    """Confirm or reject candidate FACE_ID of search SEARCH_ID. Nobody reviews their own
    search (two-person rule)."""
    row = engine.review(search_id, face_id, decision, note, actor=actor)
    if as_json:
        emit_json(serialize.review(row))
    else:
        click.echo(f"{row.reviewer} {row.decision}ed candidate {face_id} of search "
                   f"{search_id} (review #{row.id})")


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
    data = engine.stats().to_json()
    if as_json:
        emit_json(data)
        return
    for key in ("home", "store_url", "face_model", "model", "metric", "sources", "images",
                "appearances", "faces", "index_faces", "images_without_faces", "errors",
                "searches", "ingest_runs"):
        click.echo(f"{key:>21}: {data[key]}")
    click.echo(f"{'descriptor_runtime':>21}: {data['descriptor_runtime']} (faces by runtime: "
               + ", ".join(f"{k} {v}" for k, v in data["faces_by_runtime"].items()) + ")")
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
@json_option
@with_engine
def index_rebuild(engine: Facetrail, as_json: bool) -> None:
    """Rebuild the index from the store."""
    report = engine.index.rebuild()
    if as_json:
        emit_json(serialize.build_report(report))
    else:
        echo_build(report)


@index.command("optimize")
@json_option
@with_engine
@click.pass_context
def index_optimize(ctx: click.Context, engine: Facetrail, as_json: bool) -> None:
    """Rebuild the index in the structure chosen for the gallery's size and memory budget.

    With FAISS, an approximate index is used only if its recall@10 against exact search,
    measured now on sampled queries, reaches the floor (index_recall_floor); otherwise the
    previous index stays and the command exits with status 1."""
    report = engine.index.optimize()
    if as_json:
        emit_json(serialize.build_report(report))
    else:
        echo_build(report)
    if report.refused:
        ctx.exit(1)


def echo_build(report: BuildReport) -> None:
    click.echo(report.message)
    echo_fields([
        ("backend", report.backend),
        ("in use", report.kind),
        ("built", f"{report.built_kind}, refused" if report.refused else report.built_kind),
        ("faces", f"{report.faces:,}"),
        ("recall@10", _recall(report.recall_at_10)),
        ("took", f"{report.seconds:.1f} s"),
    ])
    echo_details(report.backend, report.details)


@index.command("info")
@json_option
@with_engine
def index_info(engine: Facetrail, as_json: bool) -> None:
    """The index's back end, kind, size, memory and the recall measured when it was built,
    then the back end's own details."""
    info = engine.index.info()
    if as_json:
        emit_json(serialize.index_info(info))
        return
    rows = [
        ("backend", info.backend),
        ("kind", info.kind),
        ("faces", f"{info.faces:,}"),
        ("memory", f"{info.memory_bytes / 2**20:,.1f} MiB, "
                   f"{info.memory_per_face:.1f} bytes per face"),
        ("recall@10", _recall(info.recall_at_10)),
        ("built", info.built_at or "-"),
    ]
    if info.refused:
        rows.append(("last build", f"refused: {info.why}"))
    echo_fields(rows)
    echo_details(info.backend, info.details)


def echo_fields(rows: list[tuple[str, str]]) -> None:
    for key, value in rows:
        click.echo(f"{key:>18}: {value}")


def echo_details(backend: str, details: Mapping[str, Any]) -> None:
    """An index back end's own details, by name, under a heading."""
    if not details:
        return
    click.echo(f"{backend} details:")
    echo_fields([(key, _detail(value)) for key, value in details.items()])


def _detail(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _recall(value: float | None) -> str:
    return "not measured" if value is None else f"{value}"


# -- evaluation and calibration ----------------------------------------------------------------
def eval_options(f: F) -> F:
    f = click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Keep the throwaway data directory here (default: a temporary one); "
                     "with several --model, one folder per model under it.")(f)
    f = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Report directory: report.json, .md, .html and PNG plots.")(f)
    f = click.option("--model", "models", multiple=True, metavar="NAME",
                     help="Face model to run (repeat to compare models side by side, each on "
                     "its own throwaway data directory; default: the default model).")(f)
    return f


@main.group("eval")
def eval_group() -> None:
    """Measure accuracy through the same ingest and search pipeline, on a throwaway store."""


def check_report_extras() -> None:
    """Before the work of an eval with --out: its plots can be drawn."""
    from facetrail.eval import report

    report.check_plots()


def _eval_document(kind: str, runs: dict[str, tuple[Any, dict[str, Any]]], out: Path | None,
                   as_json: bool) -> bool:
    """Write the report directory if asked; print the JSON document if asked (True then)."""
    from facetrail.eval import report

    build = {"verify": report.verify_report, "identify": report.identify_report,
             "optout": report.optout_report}[kind]
    document = (build(runs, out) if out
                else report.document(kind, {name: s for name, (_, s) in runs.items()}))
    if as_json:
        emit_json(document)
    return as_json


def _eval_table(kind: str, runs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    """Several models' summaries as one table, a column per model."""
    from facetrail.eval import report

    lines = {"verify": report.verify_lines, "identify": report.identify_lines,
             "optout": report.optout_lines}[kind]
    table = Table("metric", *runs)
    for metric, values in report.table({name: lines(s) for name, (_, s) in runs.items()}):
        table.add_row(metric, *values)
    Console(width=max(120, 40 + 45 * len(runs))).print(table)


@eval_group.command("verify")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder the pairs' image paths are relative to.")
@eval_options
@json_option
@click.pass_obj
def eval_verify(obj: dict[str, Any], pairs: Path, root: Path, models: tuple[str, ...],
                out: Path | None, work: Path | None, as_json: bool) -> None:
    """1:1 accuracy on PAIRS (LFW pairs.txt, or CSV path_a,path_b,same)."""
    if out:
        check_report_extras()
    from facetrail.eval import report, runner

    runs: dict[str, tuple[Any, dict[str, Any]]] = {}
    for model, run_work in runner.model_runs(models, work):
        outcome = runner.verify(pairs, root, run_work,
                                **runner.model_overrides(model, obj["overrides"]))
        runs[outcome.model.name] = (outcome, runner.verify_metrics(outcome))
    if _eval_document("verify", runs, out, as_json):
        return
    if len(runs) > 1:
        _eval_table("verify", runs)
    else:
        (name, (_, summary)), = runs.items()
        acc = summary["accuracy"]
        click.echo(f"model {name}: score = {summary['score']}")
        click.echo(f"{summary['pairs']} pairs ({summary['genuine']} genuine), "
                   f"{summary['no_face_images']} of {summary['images']} images with no face "
                   f"found ({summary['pairs_with_no_face']} pairs counted as rejected)")
        click.echo(f"accuracy ({acc['folds']}-fold): {acc['mean']:.4f} ± {acc['std']:.4f}   "
                   f"ROC AUC: {summary['roc_auc']:.4f}   EER: {summary['eer']['eer']:.4f}")
        for p in summary["tar_at_far"]:
            click.echo(f"TAR at FAR {p['target']:g}: {report._rate_line(p)}")
    if out:
        click.echo(f"report: {out / 'report.html'}")


@eval_group.command("identify")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--distractors", type=click.Path(exists=True, path_type=Path), default=None,
              help="Images added to the gallery (every face), of nobody among the probes.")
@click.option("--non-mated", "nonmated", type=click.Path(exists=True, path_type=Path),
              default=None, help="More non-mated probes: images of people not in FOLDER.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the enrolled / never-enrolled split.")
@click.option("--enrol-fraction", type=click.FloatRange(0.05, 0.95), default=0.5,
              show_default=True, help="Fraction of identities (with >= 2 photos) enrolled.")
@click.option("--probe-photos", type=click.IntRange(min=1), default=1, show_default=True,
              help="Photos of one person per search (fused).")
@click.option("--fusion", type=click.Choice(["mean", "max"]), default=None)
@click.option("--top", type=click.IntRange(min=10), default=None,
              help="Candidate list length L (default: the search default, 20).")
@click.option("--min-quality", type=click.FloatRange(0, 1), default=None,
              help="Quality floor of gallery faces (default: the search default).")
@eval_options
@json_option
@click.pass_obj
def eval_identify(obj: dict[str, Any], folder: Path, distractors: Path | None,
                  nonmated: Path | None, seed: int, enrol_fraction: float, probe_photos: int,
                  fusion: str | None, top: int | None, min_quality: float | None,
                  models: tuple[str, ...], out: Path | None, work: Path | None,
                  as_json: bool) -> None:
    """1:N accuracy on FOLDER (one folder per identity), in NIST FRTE terms."""
    if out:
        check_report_extras()
    from facetrail.eval import report, runner

    runs: dict[str, tuple[Any, dict[str, Any]]] = {}
    for model, run_work in runner.model_runs(models, work):
        outcome = runner.identify(
            folder, distractors=distractors, nonmated=nonmated, seed=seed,
            fraction=enrol_fraction, probe_photos=probe_photos, top=top,
            min_quality=min_quality, fusion=fusion, work=run_work,
            **runner.model_overrides(model, obj["overrides"]),
        )
        runs[outcome.model.name] = (outcome, runner.identify_metrics(outcome))
    if _eval_document("identify", runs, out, as_json):
        return
    if len(runs) > 1:
        _eval_table("identify", runs)
    else:
        (name, (_, summary)), = runs.items()
        click.echo(f"model {name}: score = {summary['score']}")
        click.echo(f"gallery: {summary['gallery_faces']} faces "
                   f"({summary['enrolled_identities']} enrolled identities, "
                   f"{summary['distractor_images']} distractor images); "
                   f"{summary['mated_searches']} mated and {summary['nonmated_searches']} "
                   f"non-mated searches of {summary['probe_photos_per_search']} photo(s)")
        click.echo(f"rank-1: {summary['rank_1']:.4f}   rank-10: {summary['rank_10']:.4f}")
        for p in summary["fnir_at_fpir"]:
            click.echo(f"FNIR at FPIR {p['target']:g}: {report._rate_line(p)}")
        d = summary["at_default_threshold"]
        click.echo(f"at the default threshold {d['threshold']} ({d['rule']}): "
                   f"FNIR {d['fnir']:.4f}, FPIR {d['fpir']:.4f}")
    if out:
        click.echo(f"report: {out / 'report.html'}")


@eval_group.command("optout")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--photos", type=click.IntRange(min=1), default=1, show_default=True,
              help="Photos the requester of each opt-out hands in.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the photos each requester hands in.")
@click.option("--groups", type=click.Path(exists=True, file_okay=False, path_type=Path),
              multiple=True, help="Folder of photos of nobody in FOLDER, added to the gallery: "
              "every face is somebody else's (repeatable).")
@click.option("--non-mated", "nonmated", type=click.Path(exists=True, path_type=Path),
              default=None, help="Photos of people not in FOLDER: each one a stranger's opt-out.")
@eval_options
@json_option
@click.pass_obj
def eval_optout(obj: dict[str, Any], folder: Path, photos: int, seed: int,
                groups: tuple[Path, ...], nonmated: Path | None, models: tuple[str, ...],
                out: Path | None, work: Path | None, as_json: bool) -> None:
    """Opt-out by face on FOLDER (one folder per identity): the requester's faces it misses
    and the other people's faces it erases too, by threshold (docs/optout-threshold.md)."""
    if out:
        check_report_extras()
    from facetrail.eval import optout, runner

    runs: dict[str, tuple[Any, dict[str, Any]]] = {}
    for model, run_work in runner.model_runs(models, work):
        outcome = optout.optout(folder, photos=photos, seed=seed, groups=groups,
                                nonmated=nonmated, work=run_work,
                                **runner.model_overrides(model, obj["overrides"]))
        runs[outcome.model.name] = (outcome, optout.optout_metrics(outcome))
    if not _eval_document("optout", runs, out, as_json):
        _eval_table("optout", runs)
        if out:
            click.echo(f"report: {out / 'report.html'}")


@main.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="With a pairs file: the folder its paths are relative to.")
@click.option("--groups", type=click.Path(exists=True, file_okay=False, path_type=Path),
              multiple=True, help="Folder of photos of several people (repeatable): every two "
              "faces within one photo, both of at least the min_quality setting, are an "
              "impostor pair.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the calibration to this JSON file instead of the store.")
@click.option("--source", "description", default=None,
              help="Where the data came from, in words (kept with the calibration).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the throwaway data directory here (default: a temporary one).")
@json_option
@with_engine
def calibrate(engine: Facetrail, data: Path, root: Path | None, groups: tuple[Path, ...],
              output: Path | None, description: str | None, work: Path | None,
              as_json: bool) -> None:
    """Measure what scores mean (score -> false-match rate) for the active model, from DATA:
    a folder with one folder per identity (all pairs of photos; in a photo with several
    faces, its largest face and each other one are an impostor pair too), or a pairs file
    with --root. The calibration is kept in the store; searches then use it."""
    from facetrail.eval import runner

    run = runner.calibrate(data, root, description, work, engine.settings,
                           engine.model_name, engine.model.key, groups,
                           declared=engine.store.user_models())
    calibration = run.calibration
    if output is not None:
        output.write_text(calibration.to_json() + "\n")
        where = str(output)
    else:
        engine.save_calibration(calibration)
        where = "the store"
    if as_json:
        emit_json({"written_to": where, "model": calibration.model,
                   "face_model": engine.model_name, "source": calibration.source,
                   "genuine": calibration.genuine, "impostor": calibration.impostor,
                   "pairs": run.counts, "resolution": calibration.resolution})
        return
    click.echo(f"calibration of {engine.model_name} ({calibration.model}) written to {where}: "
               f"{calibration.genuine:,} genuine and {calibration.impostor:,} impostor "
               f"comparisons; FMR measured down to {calibration.resolution:.1e}, extrapolated "
               "below.")
    click.echo(f"  source: {calibration.source}")
    for n in (1_000, 100_000, 10_000_000):
        t = calibration.threshold_for_gallery(n, engine.settings.fpir_target)
        click.echo(f"  gallery of {n:>10,} faces: threshold {t:.3f} keeps expected false "
                   f"candidates per search <= {engine.settings.fpir_target:g}; "
                   f"{calibration.tar_at(t):.1%} of genuine comparisons pass it")


# -- users -----------------------------------------------------------------------------------
@main.group()
def users() -> None:
    """Accounts of the HTTP API and web app, each with one role and bearer tokens."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--org", "member_of", default=None,
              help="Their organisation (default: the one you act for).")
@json_option
@with_engine(creates=True)
def users_add(engine: Facetrail, name: str, role: str, member_of: str | None, as_json: bool,
              actor: Actor) -> None:
    """Add a user; prints their token once (only its hash is kept)."""
    user, token = engine.add_user(name, role, org=member_of or actor.org)
    if as_json:
        emit_json({"user": _user_dict(user), "token": token})
        return
    click.echo(f"user {user.name} ({user.role}, {user.org}) added. Token, shown only now:")
    click.echo(token)


@users.command("list")
@json_option
@with_engine
def users_list(engine: Facetrail, as_json: bool) -> None:
    """List users, their roles and how many live tokens they have."""
    rows = engine.users()
    if as_json:
        emit_json([_user_dict(u) for u in rows])
        return
    table = Table("name", "role", "live tokens", "created", "by")
    for u in rows:
        table.add_row(u.name, u.role, str(u.active_tokens), u.created_at, u.created_by)
    Console(width=160).print(table)


@users.command("revoke")
@click.argument("name")
@with_engine
def users_revoke(engine: Facetrail, name: str) -> None:
    """Revoke all of a user's tokens and end their sessions."""
    count = engine.revoke_user(name)
    click.echo(f"{count} token(s) of {name} revoked")


@users.command("rotate")
@click.argument("name")
@with_engine
def users_rotate(engine: Facetrail, name: str) -> None:
    """Revoke a user's tokens and print a new one, once."""
    token = engine.rotate_token(name)
    click.echo(f"old tokens of {name} revoked. New token, shown only now:")
    click.echo(token)


def _user_dict(u: UserRow) -> dict[str, Any]:
    return {"name": u.name, "role": u.role, "org": u.org, "active_tokens": u.active_tokens,
            "created_at": u.created_at, "created_by": u.created_by}


# -- audit -----------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """Verify and export the hash-chained audit log."""


@audit.command("verify")
@click.option("--expect", default=None, metavar="HASH[:ID]|FILE",
              help="Also fail unless the log still holds this event with this hash: a head "
              "kept elsewhere ('audit checkpoint'), given as HASH[:ID] or its file.")
@json_option
@with_engine
def audit_verify(engine: Facetrail, expect: str | None, as_json: bool) -> None:
    """Check every event's hash and link; exits 1 and names the first bad event if broken.

    The chain alone cannot show that events were removed from its end: with --expect, a
    checkpoint of the head written earlier must still be in the log, with its hash."""
    result = engine.verify_audit(_checkpoint(expect) if expect is not None else None)
    if as_json:
        emit_json(result.to_json())
    elif result.ok:
        click.echo(f"audit log intact: {result.events} events, head {result.head}")
    else:
        click.echo(f"audit log BROKEN at event {result.first_bad_id}: {result.problem}")
    if not result.ok:
        sys.exit(1)


def _checkpoint(value: str) -> Checkpoint:
    """``--expect``: HASH[:ID], or the file 'audit checkpoint' wrote."""
    text = value
    if Path(value).is_file():
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value}: {exc.strerror or exc}",
                                     param_hint="--expect") from exc
    try:
        return Checkpoint.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expect") from exc


@audit.command("checkpoint")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the checkpoint to this file (keep it off the database's host); "
              "default: standard output.")
@json_option
@with_engine
def audit_checkpoint(engine: Facetrail, out: Path | None, as_json: bool) -> None:
    """The log's head now (id, hash, time), after checking the chain up to it: keep it
    elsewhere, and give it later to 'audit verify --expect' to detect a cut or rewritten log."""
    result = engine.verify_audit()
    if not result.ok:
        click.echo(f"audit log BROKEN at event {result.first_bad_id}: {result.problem}; "
                   "no checkpoint written", err=True)
        sys.exit(1)
    point = engine.audit_checkpoint()
    if out is not None:
        out.write_text(json.dumps(point.to_json()) + "\n", encoding="utf-8")
    if as_json:
        emit_json(point.to_json())
    elif out is None:
        click.echo(json.dumps(point.to_json()))
    else:
        click.echo(f"checkpoint of event {point.id} ({point.hash}) written to {out}; "
                   f"check it later with: facetrail audit verify --expect {out}", err=True)


@audit.command("export")
@click.option("--since", default=None, help="From this UTC date or time (ISO 8601), inclusive.")
@click.option("--until", default=None, help="Up to this UTC date or time, exclusive.")
@click.option("--case", "case_ref", default=None, help="Only events of this case reference.")
@click.option("--actor", "by", default=None, help="Only events by this user.")
@click.option("--of-org", "of_org", default=None, help="Only events of this organisation.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@with_engine
def audit_export(
    engine: Facetrail, since: str | None, until: str | None, case_ref: str | None,
    by: str | None, of_org: str | None, output: Path | None,
) -> None:
    """Write audit events as JSON Lines, one event with its hashes per line."""
    rows = engine.audit_events(
        AuditQuery(actor=by, case_ref=case_ref, since=since, until=until, org=of_org)
    )
    lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rows)
    if output is None:
        click.echo(lines, nl=False)
    else:
        output.write_text(lines, encoding="utf-8")
        click.echo(f"{len(rows)} events written to {output}", err=True)


# -- serve -----------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1: this machine).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Default 8000.")
@click.option(
    "--workers", "processes", type=click.IntRange(min=1), default=1, show_default=True,
    help="Server processes sharing the port; more than 1 needs a PostgreSQL store. (Not "
    "'facetrail --workers', the ingest worker processes of each server's jobs.)",
)
@click.pass_obj
def serve(obj: dict[str, Any], host: str | None, port: int | None, processes: int) -> None:
    """Run the HTTP API and web app. OpenAPI documentation is at /docs."""
    from facetrail.web.server import check_workers
    from facetrail.web.server import serve as run_server

    overrides = dict(obj["overrides"])
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(obj["home"], **overrides)
    check_workers(settings, processes)  # what is wrong with the command itself comes first
    require_data(settings)  # a new deployment adds its first user ('facetrail users add')
    run_server(settings, processes, say=lambda line: click.echo(line, err=True))


for _command in RIGHTS_COMMANDS:
    main.add_command(_command)
