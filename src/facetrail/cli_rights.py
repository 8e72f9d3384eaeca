"""Commands for the rights of the people in the photos: erase, opt-out, retention sweep
(docs/rights.md). Each calls the engine, which checks, does and audits the operation."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from facetrail import serialize, subject_access
from facetrail.accounts import Actor
from facetrail.cli_common import ID, emit_json, json_option, with_engine
from facetrail.engine import Facetrail
from facetrail.errors import InputError
from facetrail.rights import ErasureReport, SweepReport

PHOTOS = click.Path(exists=True, dir_okay=False, path_type=Path)


def _reason(reason: str) -> str:
    if not reason.strip():
        raise click.BadParameter("say why (the reason is kept with the erasure and audited)",
                                 param_hint="--reason")
    return reason


@click.command()
@click.option("--image", "sha256", metavar="SHA256", help="An image, by its sha256.")
@click.option("--face", "face_ids", type=ID, multiple=True, metavar="ID",
              help="A face, by id (repeatable).")
@click.option("--source", "source", metavar="NAME",
              help="A source: what only it reached, and its appearances elsewhere.")
@click.option("--photo", "photos", type=PHOTOS, multiple=True,
              help="A photo of the person: every face matching it (repeatable).")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None,
              help="With --photo: the score a face must reach (default: the opt-out "
              "threshold, FACETRAIL_OPTOUT_THRESHOLD).")
@click.option("--reason", required=True, help="Why; kept with the erasure and audited.")
@click.option("--dry-run", is_flag=True, help="Show what would be erased; erase nothing.")
@json_option
@with_engine
def erase(engine: Facetrail, sha256: str | None, face_ids: tuple[int, ...], source: str | None,
          photos: tuple[Path, ...], threshold: float | None, reason: str, dry_run: bool,
          as_json: bool, actor: Actor) -> None:
    """Erase faces, an image, a source, or a person (by photo), leaving no trace: from the
    store, the index, cached thumbnails and crops, and kept search results (which keep a
    tombstone)."""
    given = [bool(sha256), bool(face_ids), bool(source), bool(photos)]
    if sum(given) != 1:
        raise click.UsageError("name exactly one of --image, --face, --source or --photo")
    if threshold is not None and not photos:
        raise click.UsageError("--threshold applies to --photo only")
    why = _reason(reason)
    if sha256:
        report = engine.erase_image(sha256, reason=why, actor=actor, dry_run=dry_run)
    elif face_ids:
        report = engine.erase_faces(list(face_ids), reason=why, actor=actor, dry_run=dry_run)
    elif source:
        report = engine.remove_source(source, reason=why, actor=actor, dry_run=dry_run)
    else:
        report = engine.erase_photos(list(photos), reason=why, threshold=threshold,
                                     actor=actor, dry_run=dry_run)
    if as_json:
        emit_json(serialize.erasure_report(report))
    else:
        echo_erasure(report)


def echo_erasure(r: ErasureReport) -> None:
    c = r.counts
    what = (f"{c['faces']} face(s), {c['images']} image(s), {c['appearances']} appearance(s); "
            f"{c['searches']} kept search(es) get a tombstone")
    if r.matches or r.borderline:
        click.echo(f"{len(r.matches)} face(s) match at the threshold; "
                   f"{len(r.borderline)} borderline (not erased; review them: "
                   "'facetrail erase --face ID' to erase one)")
        table = Table("face", "score", "erased")
        for m in r.matches:
            table.add_row(str(m.face_id), f"{m.score:.3f}", "no (dry run)" if r.dry_run else "yes")
        for m in r.borderline:
            table.add_row(str(m.face_id), f"{m.score:.3f}", "no: borderline")
        Console().print(table)
    if r.dry_run:
        click.echo(f"dry run: would erase {what}")
        if r.faces:
            click.echo("faces: " + " ".join(map(str, r.faces[:50]))
                       + (" …" if len(r.faces) > 50 else ""))
        return
    if r.erasure_id is None:
        click.echo("nothing matched: nothing erased (audited)")
        return
    click.echo(f"erasure {r.erasure_id}: erased {what}")
    click.echo(f"index: {r.index_removed} removed; cached files: {r.files_removed} removed")
    for step in r.scrubbed:
        click.echo(f"store: {step}")


@click.group()
def optout() -> None:
    """Opt-outs by face: a person's photos (never kept) become templates; matching faces are
    erased now and suppressed from every later ingest and search."""


@optout.command("add")
@click.argument("photos", nargs=-1, required=True, type=PHOTOS)
@click.option("--reference", required=True, help="The request's reference, e.g. REQ-123.")
@click.option("--note", default="", help="A note kept with the opt-out (no ID document).")
@click.option("--dry-run", is_flag=True, help="Show which faces it would erase; keep nothing.")
@json_option
@with_engine
def optout_add(engine: Facetrail, photos: tuple[Path, ...], reference: str, note: str,
               dry_run: bool, as_json: bool, actor: Actor) -> None:
    """Opt a person out, from one or more PHOTOS of them."""
    report = engine.add_optout(list(photos), reference=reference, note=note, actor=actor,
                               dry_run=dry_run)
    if as_json:
        emit_json(serialize.optout_report(report))
        return
    if report.optout is not None:
        click.echo(f"opt-out {report.optout.reference!r} kept: {report.optout.templates} "
                   "template(s); the photos were not kept")
    echo_erasure(report.erasure)


@optout.command("list")
@json_option
@with_engine
def optout_list(engine: Facetrail, as_json: bool, actor: Actor) -> None:
    """The opt-outs in force."""
    rows = engine.optouts(actor=actor)
    if as_json:
        emit_json([serialize.optout(o) for o in rows])
        return
    if not rows:
        click.echo("no opt-out")
        return
    table = Table("reference", "photos", "templates", "created", "by", "note")
    for o in rows:
        table.add_row(o.reference, str(o.photos), str(o.templates), o.created_at,
                      o.created_by, o.note)
    Console(width=160).print(table)


@optout.command("remove")
@click.argument("reference")
@with_engine
def optout_remove(engine: Facetrail, reference: str, actor: Actor) -> None:
    """Withdraw an opt-out: its templates are erased; faces erased stay erased."""
    row = engine.remove_optout(reference, actor=actor)
    click.echo(f"opt-out {row.reference!r} removed ({row.templates} template(s) erased)")


@click.group()
def retention() -> None:
    """Enforce retention periods."""


@retention.command("sweep")
@click.option("--as-of", "as_of", metavar="DATE",
              help="Erase what has expired by DATE (YYYY-MM-DD or ISO 8601; default: now).")
@click.option("--dry-run", is_flag=True, help="Show what would be erased; erase nothing.")
@json_option
@with_engine
def retention_sweep(engine: Facetrail, as_of: str | None, dry_run: bool, as_json: bool,
                    actor: Actor) -> None:
    """Erase every appearance older than its source's retention (and images left with
    none), probes and kept searches past theirs."""
    report = engine.sweep(as_of=parse_moment(as_of), dry_run=dry_run, actor=actor)
    if as_json:
        emit_json(serialize.sweep_report(report))
    else:
        echo_sweep(report)


def parse_moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"--as-of {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
                         ) from exc
    if len(text.strip()) == 10:  # a day: its end
        moment = datetime.combine(moment.date(), time.max)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def echo_sweep(r: SweepReport) -> None:
    verb = "would expire" if r.dry_run else "expired"
    click.echo(f"retention sweep as of {r.as_of}{' (dry run)' if r.dry_run else ''}")
    table = Table("source", "retention (days)", "ingested before", "appearances", "images",
                  "faces")
    for e in r.sources:
        if e.retention_days is None:
            table.add_row(e.source, "no retention set", "-", "-", "-", "-")
        else:
            table.add_row(e.source, str(e.retention_days), e.cutoff or "-",
                          str(e.counts.get("appearances", 0)), str(e.counts.get("images", 0)),
                          str(e.counts.get("faces", 0)))
    Console(width=160).print(table)
    click.echo(f"probes {verb}: {r.probes}; kept searches {verb}: {r.searches}")
    missing = [e.source for e in r.sources if e.retention_days is None]
    if missing:
        click.echo(f"no retention set for {', '.join(missing)}: nothing of them expires; set "
                   "one with 'facetrail sources retention NAME DAYS'")


@click.command("subject-access")
@click.argument("photos", nargs=-1, required=True, type=PHOTOS)
@click.option("--reference", required=True, help="The request's reference; audited.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for index.html, report.json and the face crops.")
@click.option("--include-cases", is_flag=True,
              help="Disclose the case references and purposes of the searches that returned "
              "the faces (they may be confidential).")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None,
              help="Lowest score reported (default: the opt-out threshold).")
@json_option
@with_engine
def subject_access_command(engine: Facetrail, photos: tuple[Path, ...], reference: str,
                           out: Path, include_cases: bool, threshold: float | None,
                           as_json: bool, actor: Actor) -> None:
    """What facetrail holds about the person in PHOTOS (the largest face of each; the photos
    are not kept): every matching face with a crop of it, its image, appearances, sources'
    terms and the searches that returned it. Audited."""
    report = engine.subject_access(list(photos), reference=reference, actor=actor,
                                   include_cases=include_cases, threshold=threshold)
    index = subject_access.write(report, out)
    counts = report.counts()
    if as_json:
        emit_json({"reference": report.reference, "audit_id": report.audit_id,
                   "threshold": report.threshold, **counts, "html": str(index),
                   "json": str(out / "report.json")})
        return
    click.echo(f"{counts['faces']} faces in {counts['images']} images ({counts['appearances']} "
               f"appearances, {counts['sources']} sources) matched at {report.threshold:g}; "
               f"returned by {counts['searches']} searches.")
    click.echo(f"report: {index} and {out / 'report.json'} (audit #{report.audit_id})")
    click.echo(report.note)


COMMANDS = (erase, optout, retention, subject_access_command)
