"""The public Python API: everything a user can do. The CLI and the web app both call it.

    import facetrail
    with facetrail.open("/data/facetrail") as ft:
        ft.add_source("case-0417", "folder", "/evidence/0417",
                      lawful_basis="warrant 2026-0417", purpose="robbery investigation",
                      retention_days=365)
        ft.ingest("case-0417")
        kept = ft.search_probes([Path("probe.jpg").read_bytes()], case_ref="2026-0417",
                                purpose="identify suspect")   # audited, kept for review

Casework (probes, searches kept as records, reviews) lives in facetrail.casework and ingest
jobs in facetrail.jobs; the engine owns both and its methods are their public face.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.accounts import ROLES, Actor, new_secret, secret_hash
from facetrail.audit import (
    AuditEvent,
    Checkpoint,
    Verification,
    check_checkpoint,
    os_user,
    utc_bound,
    verify,
)
from facetrail.calibration import Calibration, shipped_default
from facetrail.casework import Casework, KeptSearch, SearchRecord
from facetrail.errors import (
    ConfigError,
    ConflictError,
    EmptyGalleryError,
    FacetrailError,
    ForbiddenError,
    Interrupted,
    NotFoundError,
    PolicyError,
    StoreError,
    StoreUnavailableError,
)
from facetrail.faces import (
    DEFAULT_FLOOR,
    DEFAULT_MODEL,
    DETECTORS,
    MODELS,
    FaceModel,
    UserModel,
    make_model,
)
from facetrail.faces.base import ModelInfo
from facetrail.faces.cache import write_atomically
from facetrail.faces.user import user_model_from_json
from facetrail.index import VectorIndex, open_index
from facetrail.jobs import Jobs
from facetrail.orgs import DEFAULT_ORG, DEFAULT_ORG_ID, Visibility
from facetrail.pipeline.analyze import Analyzer
from facetrail.pipeline.ingest import Ingest, Progress
from facetrail.pipeline.reembed import Reembed, ReembedProgress, ReembedReport
from facetrail.pipeline.search import SearchRequest, search
from facetrail.records import IngestReport, SearchResult
from facetrail.rights import ErasureReport, OptoutReport, Rights, SweepReport
from facetrail.settings import Settings, load_settings
from facetrail.sources import KINDS, make_source
from facetrail.sources.confine import check_root, source_root
from facetrail.store import (
    AuditQuery,
    ErrorRow,
    FaceRow,
    JobRow,
    OptoutRow,
    ProbeRow,
    ReviewRow,
    RunCounts,
    SearchRow,
    SourceRow,
    SourceSpec,
    Store,
    StoreStats,
    Tombstone,
    UserRow,
    default_store_url,
    open_store,
)
from facetrail.store.base import AuditRow, ErasureRow, OrgRow, ShareRow
from facetrail.subject_access import SubjectAccess, SubjectAccessReport
from facetrail.suppression import shown, shown_version

USER_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
USER_NAME = re.compile(r"[^\W_][\w.@-]{0,63}")
"""A user name: letters (any script), digits, ".", "_", "-", "@"; never a space, a control or a
direction-override character, which would let one name pass for another in the audit log."""
ACTIVE_MODEL = "active_model"
"""The store setting naming this data directory's face model."""


@dataclass(frozen=True)
class ModelStatus:
    name: str
    key: str | None
    active: bool
    images: int
    faces: int
    calibrated: bool
    """A calibration is stored for it, or facetrail ships one."""
    problem: str | None = None


@dataclass(frozen=True)
class Stats:
    """What a data directory holds for its face model, and what serves it."""

    store: StoreStats
    index_faces: int
    model: str
    face_model: str
    metric: str
    descriptor_runtime: str
    home: str
    store_url: str

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self.store).items() if k != "per_source"}
        out["per_source"] = [asdict(s) for s in self.store.per_source]
        out.update({k: v for k, v in asdict(self).items() if k != "store"})
        return out


class Facetrail:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot create the data directory {self.home}: {exc.strerror or exc}") from exc
        self.store: Store = open_store(settings.store_url or default_store_url(self.home))
        self._gallery_sizes: dict[tuple[float, int], int] = {}
        # Threads (a server's requests) may first use the index together: it is opened once.
        self._opening = threading.Lock()
        try:
            self.model_name = self._active_model()
            self.analyzer = Analyzer(settings, self.face_model(self.model_name))
        except BaseException:
            self.store.close()  # nothing was opened for the caller to close
            raise
        self.visibility = Visibility(self.store)
        self._casework = Casework(self)
        self._jobs = Jobs(self)
        self._rights = Rights(self)

    def __enter__(self) -> Facetrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the index and the store; the engine is unusable after. ``with`` calls it."""
        if "index" in self.__dict__:
            self.index.close()
        self.store.close()

    # -- face models ------------------------------------------------------------------------
    def _active_model(self) -> str:
        """The face model of this data directory: the one it records, else (a new one) the
        setting or the default, which it then records."""
        active = self.store.setting(ACTIVE_MODEL)
        requested = self.settings.face_model
        if active is None:
            name = requested or DEFAULT_MODEL
            self.face_model(name)  # refuses an unknown name before it is recorded
            self.store.set_setting(ACTIVE_MODEL, name)
            return name
        if requested is not None and requested != active:
            raise ConfigError(
                f"{self.home} uses the face model {active!r}, not {requested!r}; to move it, "
                f"run 'facetrail reembed --model {requested}' and then 'facetrail models use "
                f"{requested}' (or unset FACETRAIL_FACE_MODEL)"
            )
        return active

    def face_model(self, name: str) -> FaceModel:
        """A shipped face model, or one declared in this data directory, by name."""
        if name in MODELS:
            return make_model(name, self.settings)
        declared = self.store.user_models()
        if name not in declared:
            raise ConfigError(
                f"unknown face model {name!r}; use one of {', '.join([*MODELS, *declared])} "
                "or declare one with 'facetrail models add'"
            )
        return make_model(name, self.settings, user_model_from_json(declared[name]))

    @property
    def model(self) -> ModelInfo:
        """The embedding space searches and ingests use."""
        return self.analyzer.model.model

    @cached_property
    def model_id(self) -> int:
        """The store's id of the active model's embedding space."""
        return self.store.model_id(self.model)

    @property
    def index(self) -> VectorIndex:
        """The vector index (of ``index_backend``), caught up with the store when first used;
        opened once however many threads first ask for it together. It is kept in
        ``__dict__``, as a cached property would be (``close`` and ``use_model`` look there)."""
        index: VectorIndex | None = self.__dict__.get("index")
        if index is None:
            with self._opening:
                index = self.__dict__.get("index")
                if index is None:
                    index = open_index(self.settings, self.store, self.model, self.model_id)
                    self.__dict__["index"] = index
        return index

    @cached_property
    def calibration(self) -> Calibration | None:
        """The active model's calibration: the store's latest, else the one facetrail ships
        for its default model, else None (scores are then uncalibrated)."""
        text = self.store.calibration(self.model_id)
        if text is not None:
            try:
                return Calibration.from_json(text)
            except (ValueError, TypeError) as exc:
                raise StoreError(f"the stored calibration is unreadable: {exc}") from exc
        return shipped_default(self.model.key)

    def save_calibration(self, calibration: Calibration, actor: str | None = None) -> int:
        """Keep ``calibration`` in the store for the active model; later searches use it."""
        if calibration.model != self.model.key:
            raise PolicyError(
                f"calibration is for model {calibration.model}, not the active "
                f"{self.model.key}"
            )
        actor = actor or os_user()
        row = self.store.save_calibration(
            self.model_id, calibration.source, calibration.to_json(), actor
        )
        self.__dict__.pop("calibration", None)
        self.store.append_audit(
            AuditEvent(
                actor=actor, action="calibrate",
                details={"model": calibration.model, "source": calibration.source,
                         "genuine": calibration.genuine, "impostor": calibration.impostor},
            )
        )
        return row

    @property
    def score_floor(self) -> float:
        """The lowest default threshold: the setting, else the model's own floor."""
        if self.settings.threshold is not None:
            return self.settings.threshold
        return DEFAULT_FLOOR[self.model.metric]

    def gallery_faces(self, min_quality: float | None = None,
                      allowed: np.ndarray | None = None) -> int:
        """Indexed faces a search with ``min_quality`` can return: the gallery size that
        calibrated thresholds and expected false candidates are computed for. A search
        limited to ``allowed`` faces (an organisation's) counts at most those."""
        if allowed is not None:
            return min(len(allowed), self.gallery_faces(min_quality))
        quality = self.settings.min_quality if min_quality is None else min_quality
        size = self.index.size
        key = (quality, size)
        known = self._gallery_sizes.get(key)  # another thread may clear the dict meanwhile
        if known is None:
            known = min(size, self.store.searchable_faces(self.model_id, quality))
            self._gallery_sizes.clear()
            self._gallery_sizes[key] = known
        return known

    def default_threshold(self, min_quality: float | None = None,
                          allowed: np.ndarray | None = None
                          ) -> tuple[float, str, float | None]:
        """(threshold, rule, calibrated threshold) for a search of the current gallery."""
        floor = self.score_floor
        cal = self.calibration
        if cal is None:
            return floor, "fixed", None
        calibrated = cal.threshold_for_gallery(self.gallery_faces(min_quality, allowed),
                                               self.settings.fpir_target)
        if calibrated > floor:
            return calibrated, "calibrated", calibrated
        return floor, "floor", calibrated

    # -- sources ----------------------------------------------------------------------------
    def add_source(
        self,
        name: str,
        kind: str,
        uri: str | Path,
        *,
        lawful_basis: str,
        purpose: str,
        retention_days: int,
        actor: str | None = None,
        org: str = DEFAULT_ORG,
    ) -> SourceRow:
        """Register a source, owned by the organisation ``org``. ``uri`` must be of ``kind``
        (a folder; a CSV, JSONL or Parquet manifest with a ``path`` column; a WARC or WACZ
        file, or a folder of them), checked from at most its header: else ``PolicyError``
        or ``InputError``."""
        if kind not in KINDS:
            raise PolicyError(f"unknown source kind {kind!r}; use one of {', '.join(KINDS)}")
        if not name.strip():
            raise PolicyError("a source needs a name")
        for field, value in (("lawful basis", lawful_basis), ("purpose", purpose)):
            if not value.strip():
                raise PolicyError(f"a source needs a {field}")
        if retention_days is None or retention_days < 1:
            raise PolicyError("a source needs a retention period of at least 1 day "
                              "(--retention-days): how long its data may be kept")
        path = Path(uri).expanduser().resolve()
        if not path.exists():
            raise NotFoundError(f"{path} does not exist")
        check_root(source_root(kind, path))
        make_source(kind).check(path)  # what can be checked now is not left to the ingest
        actor = actor or os_user()
        owner = self.store.get_org(org)
        row = self.store.add_source(
            SourceSpec(name.strip(), kind, str(path), lawful_basis.strip(), purpose.strip(),
                       retention_days, owner.id),
            actor,
        )
        self.store.append_audit(
            AuditEvent(
                actor=actor, action="source.add", purpose=row.purpose, org=row.org,
                details={"source": row.name, "kind": row.kind, "uri": row.uri,
                         "lawful_basis": row.lawful_basis, "retention_days": row.retention_days},
            )
        )
        return row

    def sources(self, *, actor: Actor | None = None) -> list[SourceRow]:
        """Every source; with ``actor``, those its organisation owns or has been shared."""
        if actor is None:
            return self.store.list_sources()
        return self.visibility.sources(actor.org_id)

    def source(self, name: str, *, actor: Actor | None = None, owned: bool = False
               ) -> SourceRow:
        """A source by name; with ``actor``, only one its organisation may see, and with
        ``owned`` only one it owns (only the owner changes or ingests a source)."""
        row = self.store.get_source(name)
        if actor is None:
            return row
        if row.id not in self.visibility.source_ids(actor.org_id):
            raise NotFoundError(f"no source named {name!r}; see 'facetrail sources list'")
        if owned and row.org_id != actor.org_id:
            raise ForbiddenError(f"{name!r} belongs to the organisation {row.org!r}, which "
                                 "shares it; only its owner may change or ingest it")
        return row

    def user(self, name: str, *, actor: Actor | None = None) -> UserRow:
        """A user by name; with ``actor``, only one of its organisation."""
        row = self.store.get_user(name)
        if actor is not None and row.org_id != actor.org_id:
            raise NotFoundError(f"no user named {name!r}; see 'facetrail users list'")
        return row

    # -- organisations (facetrail.orgs) -----------------------------------------------------
    def add_org(self, name: str, *, actor: str | None = None) -> OrgRow:
        """A new organisation of this deployment. Its name is made as a user name is
        (``USER_NAME``): it is shown in pages, audit events and ``--org``."""
        name = name.strip()
        if not USER_NAME.fullmatch(name):
            raise PolicyError(
                "an organisation's name is 1-64 letters, digits, '.', '_', '-' or '@', "
                "starting with a letter or digit (no spaces, control or direction "
                f"characters); not {name!r}")
        row = self.store.add_org(name, actor or os_user())
        self.store.append_audit(AuditEvent(actor=actor or os_user(), action="org.add",
                                           details={"org": row.name}))
        return row

    def orgs(self) -> list[OrgRow]:
        """Every organisation of this deployment."""
        return self.store.list_orgs()

    def share_source(self, source: str, org: str, *, lawful_basis: str, purpose: str,
                     actor: str | None = None) -> ShareRow:
        """Let ``org`` search ``source``, under the sharing's own lawful basis and purpose.
        Audited in both organisations' logs."""
        row = self.store.get_source(source)
        target = self.store.get_org(org)
        if target.id == row.org_id:
            raise PolicyError(f"{org!r} owns {source!r} already")
        for field, value in (("lawful basis", lawful_basis), ("purpose", purpose)):
            if not value.strip():
                raise PolicyError(f"sharing a source needs a {field}")
        actor = actor or os_user()
        share = self.store.share_source(row.id, target.id, lawful_basis.strip(),
                                        purpose.strip(), actor)
        for org_name in (row.org, target.name):
            self.store.append_audit(AuditEvent(
                actor=actor, action="source.share", purpose=share.purpose, org=org_name,
                details={"source": row.name, "owner": row.org, "with": target.name,
                         "lawful_basis": share.lawful_basis},
            ))
        return share

    def unshare_source(self, source: str, org: str, *, actor: str | None = None) -> None:
        """Stop sharing ``source`` with ``org``; audited in both organisations' logs."""
        row = self.store.get_source(source)
        target = self.store.get_org(org)
        if not self.store.unshare_source(row.id, target.id):
            raise NotFoundError(f"{source!r} is not shared with {org!r}")
        for org_name in (row.org, target.name):
            self.store.append_audit(AuditEvent(
                actor=actor or os_user(), action="source.unshare", org=org_name,
                details={"source": row.name, "owner": row.org, "with": target.name},
            ))

    def shares(self, source: str | None = None) -> list[ShareRow]:
        """Every sharing of a source with another organisation; of one source, or of all."""
        return self.store.shares(self.store.get_source(source).id if source else None)

    def actor(self, name: str | None = None, org: str = DEFAULT_ORG) -> Actor:
        """The local operator (or ``name``) acting for the organisation ``org``."""
        row = self.store.get_org(org)
        return Actor(name or os_user(), org=row.name, org_id=row.id)

    def set_retention(
        self, name: str, retention_days: int, *, actor: str | None = None
    ) -> SourceRow:
        """Change how long a source's data is kept, in days."""
        if retention_days is None or retention_days < 1:
            raise PolicyError(f"retention is at least 1 day; not {retention_days}")
        before = self.store.get_source(name)
        row = self.store.set_retention(name, retention_days)
        self.store.append_audit(
            AuditEvent(actor=actor or os_user(), action="source.retention", purpose=row.purpose,
                       org=row.org,
                       details={"source": row.name, "retention_days": row.retention_days,
                                "was": before.retention_days})
        )
        return row

    # -- ingest -----------------------------------------------------------------------------
    def ingest(
        self,
        source: str,
        paths: Iterable[str | Path] | None = None,
        *,
        progress: Progress | None = None,
        actor: str | None = None,
    ) -> IngestReport:
        """Index the registered ``source`` (``paths``: only these, under it or of its kind), and
        audit the run. Incremental: unchanged locations are skipped, and an interrupted run
        resumes where it stopped when run again. ``progress`` is called as items are
        counted. Every item that could not be ingested is recorded (``errors``), with why."""
        row = self.store.get_source(source)
        actor = actor or os_user()
        targets = [Path(p).expanduser().resolve() for p in paths] if paths else None
        where = [str(p) for p in targets] if targets else [row.uri]
        try:
            report = Ingest(self.store, self.settings, self.analyzer,
                            self._rights.suppress).run(row, targets, actor, progress)
        except KeyboardInterrupt as stop:
            if type(stop) is not KeyboardInterrupt:
                raise  # a deliberate stop (a cancelled job), audited by whoever stopped it
            run = next((r for r in reversed(self.store.runs()) if r.source == row.name), None)
            counts = run.counts if run is not None else RunCounts()
            self.store.append_audit(AuditEvent(
                actor=actor, action="ingest", purpose=row.purpose, org=row.org,
                details={"source": row.name, "run_id": run.id if run else None, "paths": where,
                         "status": "interrupted", "images_new": counts.images_new,
                         "faces": counts.faces, "errors": counts.errors}))
            raise Interrupted(
                f"ingest of {row.name!r} interrupted: {counts.images_new} new image(s) and "
                f"{counts.faces} face(s) were kept (run {run.id if run else '-'}); run the same "
                "command again to continue where it stopped"
            ) from None
        if "index" in self.__dict__:
            self.index.sync()
        self.store.append_audit(
            AuditEvent(
                actor=actor, action="ingest", purpose=row.purpose, org=row.org,
                details={"source": row.name, "run_id": report.run_id, "paths": where,
                         "status": "completed", "images_new": report.images_new,
                         "faces": report.faces, "errors": report.errors},
            )
        )
        return report

    def errors(self, source: str | None = None) -> list[ErrorRow]:
        """Every item that could not be ingested and why; of one source, or of all."""
        return self.store.errors(source)

    # -- ingest jobs (facetrail.jobs) -------------------------------------------------------
    def add_job(
        self, source: str, paths: Sequence[str] = (), *, actor: str | None = None
    ) -> JobRow:
        """Queue an ingest of ``source`` (``paths`` under it; none: all of it) for a runner."""
        return self._jobs.add(source, paths, actor or os_user())

    def cancel_job(self, job_id: int, *, actor: str | None = None) -> JobRow:
        """Cancel a queued job; a running one stops at its next progress write."""
        return self._jobs.cancel(job_id, actor or os_user())

    def claim_job(self, holder: str) -> JobRow | None:
        """Claim for the runner ``holder`` the oldest job it may run (queued, or left by a
        runner that died); None if there is none (facetrail.jobs: leases)."""
        return self._jobs.claim(holder)

    def renew_job(self, job_id: int, holder: str) -> bool:
        """Renew ``holder``'s lease on a job it runs; False if it lost it or the job ended."""
        return self._jobs.renew(job_id, holder)

    def run_job(self, job_id: int, holder: str,
                stopping: Callable[[], bool] = lambda: False) -> JobRow:
        """Run a job ``holder`` claimed to its end (or until ``stopping()``), while the
        caller renews the lease."""
        return self._jobs.run(job_id, holder, stopping)

    def jobs(self, *, unfinished: bool = False, limit: int = 200) -> list[JobRow]:
        """Newest first; ``unfinished``: the queued and running ones, oldest first."""
        return self.store.list_jobs(unfinished=unfinished, limit=limit)

    def job(self, job_id: int) -> JobRow:
        """One ingest job; NotFoundError if there is none with that id."""
        return self.store.get_job(job_id)

    # -- the rights of the people in the photos (facetrail.rights) ------------------------
    def erase_faces(self, face_ids: Sequence[int], *, reason: str, actor: Actor | None = None,
                    dry_run: bool = False) -> ErasureReport:
        """Erase faces by id: from the store, the indexes, caches and kept results."""
        return self._rights.erase_face(face_ids, reason=reason, actor=actor or Actor.local(),
                                       dry_run=dry_run)

    def erase_image(self, sha256: str, *, reason: str, actor: Actor | None = None,
                    dry_run: bool = False) -> ErasureReport:
        """Erase an image, all its faces and appearances; it is never ingested again."""
        return self._rights.erase_image(sha256, reason=reason, actor=actor or Actor.local(),
                                        dry_run=dry_run)

    def erase_photos(self, photos: Sequence[bytes | str | Path], *, reason: str,
                     threshold: float | None = None, actor: Actor | None = None,
                     dry_run: bool = False) -> ErasureReport:
        """Erase every face matching the person in ``photos`` at ``threshold`` or above
        (default: ``optout_threshold``); faces just under it are reported as borderline."""
        return self._rights.erase_photos(_read_all(photos), reason=reason,
                                         threshold=threshold, actor=actor or Actor.local(),
                                         dry_run=dry_run)

    def remove_source(self, name: str, *, reason: str, actor: Actor | None = None,
                      dry_run: bool = False) -> ErasureReport:
        """Remove a source: what only it reached is erased, its appearances elsewhere go."""
        return self._rights.remove_source(name, reason=reason, actor=actor or Actor.local(),
                                          dry_run=dry_run)

    def add_optout(self, photos: Sequence[bytes | str | Path], *, reference: str, note: str = "",
                   actor: Actor | None = None, dry_run: bool = False) -> OptoutReport:
        """Keep templates of a person's face (never the photos) under ``reference``, erase
        every face that matches them, and suppress matching faces from now on."""
        return self._rights.add_optout(_read_all(photos), reference=reference, note=note,
                                       actor=actor or Actor.local(), dry_run=dry_run)

    def optouts(self, *, actor: Actor | None = None) -> list[OptoutRow]:
        """The opt-outs in force (their references and notes; never photos)."""
        return self._rights.optouts(actor or Actor.local())

    def remove_optout(self, reference: str, *, actor: Actor | None = None) -> OptoutRow:
        """Lift the opt-out ``reference``: its templates are deleted; audited."""
        return self._rights.remove_optout(reference, actor=actor or Actor.local())

    def sweep(self, *, as_of: datetime | None = None, dry_run: bool = False,
              actor: Actor | None = None) -> SweepReport:
        """Erase what is past its retention by ``as_of`` (default: now): sources'
        appearances, probes' bytes, kept searches."""
        return self._rights.sweep(actor=actor or Actor.local(), as_of=as_of, dry_run=dry_run)

    def tombstones(self, face_ids: Sequence[int]) -> dict[int, Tombstone]:
        """For each of ``face_ids`` that was erased: when, by whom and why."""
        return self.store.tombstones(face_ids)

    @property
    def optout_threshold(self) -> float:
        """The score at which a face matches a person's photos, for opt-outs, erasure by
        photo and subject access: ``optout_threshold``, else the model's floor."""
        return self._rights.threshold

    def subject_access(self, photos: Sequence[bytes | str | Path], *, reference: str,
                       actor: Actor | None = None, include_cases: bool = False,
                       threshold: float | None = None) -> SubjectAccessReport:
        """What is held about the person in ``photos`` (the largest face of each; the photos
        are not kept): every face matching at ``threshold`` or above (default:
        ``optout_threshold``), its crop, image, appearances, sources' terms and the searches
        that returned it, case references only with ``include_cases``. Audited."""
        return SubjectAccess(self, self._rights).run(
            _read_all(photos), reference=reference, actor=actor or Actor.local(),
            include_cases=include_cases, threshold=threshold)

    def erasures(self, *, limit: int = 200, actor: Actor | None = None) -> list[ErasureRow]:
        """Past erasures, newest first: when, by whom, of what and why, with their counts."""
        self._rights.check(actor or Actor.local())
        return self.store.erasures(limit)

    def face_to_erase(self, face_id: int, *, actor: Actor | None = None) -> FaceRow:
        """A stored face of any organisation, for whoever carries out erasures
        (``Rights.check``): what an erasure or an opt-out takes is looked at first."""
        self._rights.check(actor or Actor.local())
        face = self.store.faces([face_id]).get(face_id)
        if face is None:
            raise NotFoundError(f"no face {face_id}")
        return face

    def image_to_erase(self, sha256: str, *, actor: Actor | None = None) -> bytes:
        """An indexed image's bytes, of any organisation, for whoever carries out erasures."""
        self._rights.check(actor or Actor.local())
        return shown(self.store, self.settings, sha256)

    # -- search -----------------------------------------------------------------------------
    def search(
        self,
        probe: bytes | str | Path,
        *,
        case_ref: str,
        purpose: str,
        top: int | None = None,
        threshold: float | None = None,
        min_quality: float | None = None,
        face: int | None = None,
        all_faces: bool = False,
        actor: str | Actor | None = None,
        more_probes: Iterable[bytes | str | Path] = (),
        photo_faces: Sequence[int] = (),
        fusion: str | None = None,
        history: bool = False,
    ) -> SearchResult:
        """Search ``probe``: a photo's bytes, or its path (``str`` or ``Path``). With
        ``more_probes`` (further photos of the same person), one face of every photo (the
        largest, or the one ``photo_faces`` gives for each photo in order) is searched as one
        person (``fusion``). Only faces the actor's organisation may see
        are searched (the local operator's: 'default'). With ``history``, images no longer
        where they were seen are found too (docs/provenance.md).

        Audited (case and purpose); ``search_probes`` also keeps it as a case record."""
        who = actor if isinstance(actor, Actor) else Actor.local()
        if isinstance(actor, str):
            who = Actor(actor)
        allowed = self.visibility.allowed_faces(who.org_id, self.model_id)
        if self.index.size == 0 and self.store.face_count(self.model_id)[0] > 0:
            self.index.sync()  # another process ingested since this one opened the index
        if self.index.size == 0:
            raise EmptyGalleryError(
                f"nothing to search: no face is indexed in {self.store.where}; register and "
                "ingest a source first ('facetrail sources add', 'facetrail ingest'), or check "
                "that --home and --store name the data you meant"
            )
        if allowed is not None and len(allowed) == 0:
            raise EmptyGalleryError(
                f"nothing to search: the organisation {who.org!r} owns, and has been shared, "
                "no source with an indexed face"
            )
        data = _read(probe)
        more = tuple(_read(p) for p in more_probes)
        quality = min_quality if min_quality is not None else self.settings.min_quality
        if threshold is not None:
            rule, calibrated = "override", None
        else:
            threshold, rule, calibrated = self.default_threshold(quality, allowed)
        request = SearchRequest(
            probe=data, case_ref=case_ref, purpose=purpose, actor=who.name, org=who.org,
            allowed=allowed,
            top=top if top is not None else self.settings.top,
            threshold=threshold,
            min_quality=quality, gallery_faces=self.gallery_faces(quality, allowed),
            face=face, all_faces=all_faces, more_probes=more, photo_faces=tuple(photo_faces),
            fusion=fusion or self.settings.fusion, calibration=self.calibration,
            fpir_target=self.settings.fpir_target, threshold_rule=rule,
            calibrated_threshold=calibrated, exclude=self._rights.opted_out, history=history,
        )
        result = search(request, self.analyzer, self.index, self.store)
        return self.visibility.result(result, who.org_id) if allowed is not None else result

    # -- casework: probes, searches kept as records, reviews (facetrail.casework) ----------
    def keep_probe(self, data: bytes, *, actor: Actor | None = None) -> ProbeRow:
        """Keep a probe photo under ``<home>/probes`` with the faces found in it."""
        return self._casework.add_probe(data, actor or Actor.local())

    def probe(self, sha256: str, *, actor: Actor | None = None) -> ProbeRow:
        """A kept probe that ``actor``'s organisation uploaded."""
        return self._casework.probe(sha256, actor or Actor.local())

    def probe_bytes(self, sha256: str, *, actor: Actor | None = None) -> bytes:
        """The bytes of a kept probe that ``actor``'s organisation uploaded."""
        return self._casework.probe_bytes(sha256, actor or Actor.local())

    def search_probes(
        self,
        probes: Sequence[str | bytes],
        *,
        case_ref: str,
        purpose: str,
        face: int | None = None,
        all_faces: bool = False,
        photo_faces: Sequence[int] = (),
        top: int | None = None,
        threshold: float | None = None,
        min_quality: float | None = None,
        fusion: str | None = None,
        actor: Actor | None = None,
        history: bool = False,
    ) -> KeptSearch:
        """``search`` of kept probes (a sha256 each, or bytes kept first), itself kept as a
        case record whose candidates can be reviewed. Several probes: one person's photos."""
        return self._casework.search(
            probes, actor or Actor.local(), case_ref=case_ref, purpose=purpose, face=face,
            all_faces=all_faces, photo_faces=photo_faces, top=top, threshold=threshold,
            min_quality=min_quality, fusion=fusion, history=history,
        )

    def searches(
        self, *, case_ref: str | None = None, by: str | None = None, limit: int = 200,
        actor: Actor | None = None,
    ) -> list[SearchRow]:
        """Kept searches of ``actor``'s organisation, newest first: all, of one case, or by
        one actor (a name)."""
        return self._casework.searches(actor or Actor.local(), case_ref, by, limit)

    def review_queue(self, *, actor: Actor | None = None, limit: int = 200) -> list[SearchRow]:
        """Searches by others than ``actor`` with candidates no one has reviewed yet."""
        return self._casework.review_queue(actor or Actor.local(), limit)

    def search_record(self, search_id: int, *, actor: Actor | None = None) -> SearchRecord:
        """A kept search of ``actor``'s organisation with its result and reviews."""
        return self._casework.record(search_id, actor or Actor.local())

    def case_records(self, case_ref: str, *, actor: Actor | None = None
                     ) -> list[SearchRecord]:
        """Every search of a case made for ``actor``'s organisation, oldest first, with its
        reviews."""
        return self._casework.case(case_ref, actor or Actor.local())

    def search_to_review(self, search_id: int, *, actor: Actor | None = None) -> SearchRecord:
        """A search for ``actor`` to review; refused if it is their own (two-person rule)."""
        return self._casework.to_review(search_id, actor or Actor.local())

    def review(
        self, search_id: int, face_id: int, decision: str, note: str, *,
        actor: Actor | None = None,
    ) -> ReviewRow:
        """Confirm or reject a candidate of someone else's search, with a note; audited."""
        return self._casework.review(search_id, face_id, decision, note,
                                     actor or Actor.local())

    # -- what a search found ------------------------------------------------------------------
    def face(self, face_id: int, *, actor: Actor | None = None) -> FaceRow:
        """A stored face that ``actor``'s organisation may see, with the appearances it may
        see."""
        org_id = (actor or Actor.local()).org_id
        face = self.store.faces([face_id]).get(face_id)
        if face is None:
            raise NotFoundError(f"no face {face_id}")
        self.visibility.check_seen(face.appearances, org_id, f"face {face_id}")
        return replace(face, appearances=tuple(
            self.visibility.appearances(face.appearances, org_id)))

    def check_image(self, sha256: str, *, actor: Actor | None = None) -> None:
        """Raise NotFoundError unless ``actor``'s organisation may see the image."""
        self.visibility.check_seen(self.store.image_appearances(sha256),
                                   (actor or Actor.local()).org_id, f"image {sha256}")

    def image_bytes(self, sha256: str, *, actor: Actor | None = None) -> bytes:
        """An indexed image's bytes, read back from where it was found (checked by hash), if
        ``actor``'s organisation may see it; with the faces erased from it painted over
        (``suppression.shown``)."""
        self.check_image(sha256, actor=actor)
        return shown(self.store, self.settings, sha256)

    def shown_version(self, sha256: str) -> str:
        """'' if an image is shown as it is, else a digest of the boxes painted over in it
        (``suppression.shown_version``): part of the names of its kept thumbnail and crops."""
        return shown_version(self.store, sha256)

    # -- moving between face models -------------------------------------------------------
    def model_statuses(self) -> list[ModelStatus]:
        """Every face model this data directory can use: the shipped ones and the declared
        ones, with what the store holds for each."""
        by_key = {key: model_id for model_id, key, _ in self.store.models()}
        out = []
        for name in [*MODELS, *self.store.user_models()]:
            try:
                key = self.face_model(name).model.key
            except FacetrailError as exc:
                out.append(ModelStatus(name, None, name == self.model_name, 0, 0, False,
                                       f"unusable: {exc}"))
                continue
            model_id = by_key.get(key)
            images = self.store.image_count(model_id) if model_id is not None else 0
            faces = self.store.face_count(model_id)[0] if model_id is not None else 0
            calibrated = (model_id is not None and self.store.calibration(model_id) is not None
                          ) or shipped_default(key) is not None
            out.append(ModelStatus(name, key, name == self.model_name, images, faces,
                                   calibrated, None))
        return out

    def add_user_model(
        self, name: str, embedder: Path, *, input_size: int, mean: float, std: float,
        channels: str, template: str, metric: str, detector: str | Path = "yunet",
        actor: str | None = None,
    ) -> FaceModel:
        """Declare a face model from the user's own ONNX embedder (and, optionally, a YuNet-
        shaped ONNX detector). The files are copied under ``<home>/models/user/``, checked
        (ONNX, input and output shapes, a test run) and recorded with their sha256."""
        name = name.strip()
        if not USER_MODEL_NAME.fullmatch(name):
            raise PolicyError(f"a model name is 1-40 lower-case letters, digits, '.', '_' or "
                              f"'-', starting with a letter or digit; not {name!r}")
        if name in MODELS or name in self.store.user_models():
            raise ConflictError(f"a face model named {name!r} already exists")
        kept_embedder, embedder_sha = self._keep_model_file(embedder)
        detector_file = detector_sha = None
        detector_name = str(detector)
        if detector_name not in DETECTORS:
            detector_file, detector_sha = self._keep_model_file(Path(detector))
            detector_name = "onnx"
        user = UserModel(
            name=name, embedder=kept_embedder, embedder_sha256=embedder_sha,
            input_size=input_size, mean=mean, std=std, channels=channels, template=template,
            metric=metric, detector=detector_name, detector_file=detector_file,
            detector_sha256=detector_sha,
        )
        model = make_model(name, self.settings, user)
        model.load()  # every check happens here: a bad file is refused before it is recorded
        if detector_file is not None:
            from facetrail.imaging import DecodedImage

            model.detector.detect(DecodedImage("", np.zeros((64, 64, 3), np.uint8), "PNG"))
        actor = actor or os_user()
        self.store.add_user_model(name, user.to_json(), actor)
        self.store.append_audit(AuditEvent(
            actor=actor, action="model.add",
            details={"model": name, "key": model.model.key, "embedder_sha256": embedder_sha,
                     "detector": detector_name, "detector_sha256": detector_sha},
        ))
        return model

    def _keep_model_file(self, path: Path) -> tuple[Path, str]:
        """Copy a user's model file into ``<home>/models/user/<sha256>.onnx``."""
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise NotFoundError(f"cannot read {path}: {exc.strerror or exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        target = self.home / "models" / "user" / f"{digest}.onnx"
        if not target.exists():
            write_atomically(target, lambda tmp: tmp.write_bytes(data))
        return target, digest

    def reembed(
        self, target: str, *, progress: Callable[[ReembedProgress], None] | None = None,
        actor: str | None = None,
    ) -> ReembedReport:
        """Analyse every image of the active model again with the face model ``target``,
        from the images' recorded locations; the active model stays in use (``use_model``
        switches). Resumes an interrupted move; builds the target's index at the end."""
        model = self.face_model(target)
        if model.model.key == self.model.key:
            raise PolicyError(f"{self.home} already uses the face model {target!r}")
        target_id = self.store.model_id(model.model)
        report = Reembed(self.store, self.settings, self.model_id, Analyzer(self.settings, model),
                         target_id, self._rights.suppress).run(progress)
        open_index(self.settings, self.store, model.model, target_id).close()
        self.store.append_audit(AuditEvent(
            actor=actor or os_user(), action="model.reembed",
            details={"from": self.model_name, "to": target, "to_key": model.model.key,
                     "images": report.total, "moved": report.moved, "already": report.already,
                     "faces": report.faces, "unreadable": len(report.unreadable),
                     "failed": len(report.failed)},
        ))
        return report

    def use_model(self, name: str, *, force: bool = False, actor: str | None = None) -> None:
        """Make ``name`` this data directory's face model: searches and ingests use it from
        now on. Refused while it holds fewer images than the active model (a move that is not
        finished) unless ``force``."""
        model = self.face_model(name)
        target_id = self.store.model_id(model.model)
        missing = self.store.count_to_move(self.model_id, target_id)
        if missing and not force:
            raise PolicyError(
                f"{missing} of the {self.store.image_count(self.model_id)} images of "
                f"{self.model_name!r} have not been moved to {name!r}: run 'facetrail reembed "
                f"--model {name}' first (images no longer readable stay behind; --force "
                "switches anyway)"
            )
        uncovered = self._rights.uncovered_optouts(target_id)
        if uncovered and not force:
            raise PolicyError(
                f"{len(uncovered)} opt-out(s) ({', '.join(uncovered[:5])}) have no template for "
                f"{name!r}: their photos were not kept, so they cannot be made again. Ask the "
                "people for new photos and add the opt-outs with this model after the switch "
                "(--force switches anyway; until then they are not applied)"
            )
        previous = self.model_name
        self.store.set_setting(ACTIVE_MODEL, name)
        self.store.append_audit(AuditEvent(
            actor=actor or os_user(), action="model.use",
            details={"from": previous, "to": name, "key": model.model.key,
                     "images_left_behind": missing},
        ))
        if "index" in self.__dict__:
            self.index.close()
        for cached in ("index", "model_id", "calibration"):
            self.__dict__.pop(cached, None)
        self._gallery_sizes.clear()
        self.model_name = name
        self.analyzer = Analyzer(self.settings, model)

    # -- users and tokens -------------------------------------------------------------------
    def add_user(self, name: str, role: str, *, actor: str | None = None,
                 org: str = DEFAULT_ORG) -> tuple[UserRow, str]:
        """A new user of the organisation ``org`` and their first token. The token is
        returned once and never stored."""
        if role not in ROLES:
            raise PolicyError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        name = name.strip()
        if not USER_NAME.fullmatch(name):
            raise PolicyError(
                "a user name is 1-64 letters, digits, '.', '_', '-' or '@', starting with a "
                f"letter or digit (no spaces, control or direction characters); not {name!r}")
        actor = actor or os_user()
        member = self.store.get_org(org)
        user = self.store.add_user(name, role, actor, member.id)
        token = new_secret()
        self.store.add_token(user.id, secret_hash(token))
        self.store.append_audit(
            AuditEvent(actor=actor, action="user.add", org=member.name,
                       details={"user": user.name, "role": role, "org": member.name})
        )
        return self.store.get_user(user.name), token

    def users(self) -> list[UserRow]:
        """Every user, of every organisation, with how many live tokens each has."""
        return self.store.list_users()

    def revoke_user(self, name: str, *, actor: str | None = None) -> int:
        """Revoke every token of a user (and end their sessions). Returns how many."""
        user = self.store.get_user(name)
        revoked = self.store.revoke_tokens(user.id)
        self.store.append_audit(
            AuditEvent(actor=actor or os_user(), action="user.revoke", org=user.org,
                       details={"user": user.name, "tokens_revoked": revoked})
        )
        return revoked

    def rotate_token(self, name: str, *, actor: str | None = None) -> str:
        """Revoke a user's tokens and issue a new one, returned once."""
        user = self.store.get_user(name)
        revoked = self.store.revoke_tokens(user.id)
        token = new_secret()
        self.store.add_token(user.id, secret_hash(token))
        self.store.append_audit(
            AuditEvent(actor=actor or os_user(), action="user.rotate", org=user.org,
                       details={"user": user.name, "tokens_revoked": revoked})
        )
        return token

    # -- audit ------------------------------------------------------------------------------
    def audit_events(self, query: AuditQuery | None = None, *, actor: Actor | None = None
                     ) -> list[AuditRow]:
        """Audit events matching ``query``: an organisation's auditor reads its own
        organisation's; oversight and the local operator read every one."""
        query = query or AuditQuery()
        # Times are compared as the log stores them: parsed, checked and made UTC first.
        query = replace(
            query,
            since=utc_bound(query.since, "--since") if query.since else None,
            until=utc_bound(query.until, "--until") if query.until else None,
        )
        if actor is not None and not actor.sees_every_org:
            # The deployment's own events (organisations, face models) are the default
            # organisation's to read too: a single-team deployment reads its whole log.
            query = replace(query, org=actor.org,
                            with_deployment=actor.org_id == DEFAULT_ORG_ID)
        return self.store.audit_rows(query)

    def verify_audit(self, expect: Checkpoint | None = None) -> Verification:
        """Check the whole hash chain; names the first event that breaks it. With ``expect``
        (a checkpoint kept outside the database), also fail unless the log still holds that
        event with that hash: events removed from the end leave a valid, shorter chain."""
        rows = self.store.audit_rows()
        verified = verify(rows)
        return verified if expect is None else check_checkpoint(rows, expect, verified)

    def audit_checkpoint(self) -> Checkpoint:
        """The log's head now (its last event's id, hash and time), to keep elsewhere."""
        rows = self.store.audit_rows()
        if not rows:
            raise ConflictError("the audit log is empty: there is no head to checkpoint yet")
        last = rows[-1]
        return Checkpoint(last.id, last.hash, last.event.at)

    # -- reporting --------------------------------------------------------------------------
    def stats(self) -> Stats:
        """What the data directory holds for the active model (sources, images, faces, errors,
        searches), and what serves it."""
        return Stats(
            store=self.store.stats(self.model_id), index_faces=self.index.size,
            model=self.model.key, face_model=self.model_name, metric=self.model.metric,
            descriptor_runtime=self.analyzer.model.runtime, home=str(self.home),
            store_url=self.store.where,
        )


def open(home: str | Path | None = None, **overrides: Any) -> Facetrail:  # noqa: A001
    """Open (creating if needed) the facetrail data directory ``home``.

    Without ``home``, ``FACETRAIL_HOME`` or else the platform's user data directory is used.
    """
    return Facetrail(load_settings(home, **overrides))


def _read(photo: bytes | str | Path) -> bytes:
    """A photo's bytes: given as bytes, or read from its path (a ``str`` is a path too)."""
    if isinstance(photo, bytes | bytearray | memoryview):
        return bytes(photo)
    try:
        return Path(photo).expanduser().read_bytes()
    except OSError as exc:
        raise NotFoundError(f"cannot read the photo {photo}: {exc.strerror or exc}") from exc


def _read_all(photos: Sequence[bytes | str | Path]) -> list[bytes]:
    return [_read(p) for p in photos]
