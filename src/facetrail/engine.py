"""The public Python API. The CLI calls it, and so will the web API.

    import facetrail
    with facetrail.open("/data/facetrail") as ft:
        ft.add_source("case-0417", "folder", "/evidence/0417",
                      lawful_basis="warrant 2026-0417", purpose="robbery investigation",
                      retention_days=365)
        ft.ingest("case-0417")
        result = ft.search(Path("probe.jpg").read_bytes(), case_ref="2026-0417",
                           purpose="identify suspect")
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from facetrail.audit import AuditEvent, os_user
from facetrail.errors import NotFoundError, PolicyError
from facetrail.index.ann import IndexPolicy
from facetrail.index.faiss_index import FaissIndex
from facetrail.pipeline.analyze import Analyzer
from facetrail.pipeline.ingest import Ingest, Progress
from facetrail.pipeline.search import SearchRequest, search
from facetrail.records import IngestReport, SearchResult
from facetrail.settings import Settings, load_settings
from facetrail.sources import KINDS
from facetrail.store import ErrorRow, SourceRow, SourceSpec, Store, open_store


class Facetrail:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.store: Store = open_store(self.home)
        self.analyzer = Analyzer(settings)

    def __enter__(self) -> Facetrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if "index" in self.__dict__:
            self.index.save()
        self.store.close()

    @cached_property
    def model_id(self) -> int:
        return self.store.model_id(self.analyzer.backend.model)

    @cached_property
    def index(self) -> FaissIndex:
        """The vector index, caught up with the store when first used."""
        model = self.analyzer.backend.model
        return FaissIndex(self.home / "index", self.store, model, self.model_id,
                          IndexPolicy.from_settings(self.settings))

    # -- sources ----------------------------------------------------------------------------
    def add_source(
        self,
        name: str,
        kind: str,
        uri: str | Path,
        *,
        lawful_basis: str,
        purpose: str,
        retention_days: int | None,
        actor: str | None = None,
    ) -> SourceRow:
        if kind not in KINDS:
            raise PolicyError(f"unknown source kind {kind!r}; use one of {', '.join(KINDS)}")
        if not name.strip():
            raise PolicyError("a source needs a name")
        path = Path(uri).expanduser().resolve()
        if not path.exists():
            raise NotFoundError(f"{path} does not exist")
        actor = actor or os_user()
        row = self.store.add_source(
            SourceSpec(name.strip(), kind, str(path), lawful_basis, purpose, retention_days),
            actor,
        )
        self.store.append_audit(
            AuditEvent(
                actor=actor, action="source.add", purpose=row.purpose,
                details={"source": row.name, "kind": row.kind, "uri": row.uri,
                         "lawful_basis": row.lawful_basis, "retention_days": row.retention_days},
            )
        )
        return row

    def sources(self) -> list[SourceRow]:
        return self.store.list_sources()

    # -- ingest -----------------------------------------------------------------------------
    def ingest(
        self,
        source: str,
        paths: Iterable[str | Path] | None = None,
        *,
        progress: Progress | None = None,
        actor: str | None = None,
    ) -> IngestReport:
        row = self.store.get_source(source)
        actor = actor or os_user()
        targets = [Path(p).expanduser().resolve() for p in paths] if paths else None
        report = Ingest(self.store, self.settings, self.analyzer).run(row, targets, actor, progress)
        if "index" in self.__dict__:
            self.index.sync()
        self.store.append_audit(
            AuditEvent(
                actor=actor, action="ingest", purpose=row.purpose,
                details={"source": row.name, "run_id": report.run_id,
                         "paths": [str(p) for p in targets] if targets else [row.uri],
                         "images_new": report.images_new, "faces": report.faces,
                         "errors": report.errors},
            )
        )
        return report

    def errors(self, source: str | None = None) -> list[ErrorRow]:
        return self.store.errors(source)

    # -- search -----------------------------------------------------------------------------
    def search(
        self,
        probe: bytes | Path,
        *,
        case_ref: str,
        purpose: str,
        top: int | None = None,
        threshold: float | None = None,
        min_quality: float | None = None,
        face: int | None = None,
        all_faces: bool = False,
        actor: str | None = None,
    ) -> SearchResult:
        data = probe.read_bytes() if isinstance(probe, Path) else probe
        request = SearchRequest(
            probe=data, case_ref=case_ref, purpose=purpose, actor=actor or os_user(),
            top=top if top is not None else self.settings.top,
            threshold=threshold if threshold is not None else self.settings.threshold,
            min_quality=min_quality if min_quality is not None else self.settings.min_quality,
            face=face, all_faces=all_faces,
        )
        return search(request, self.analyzer, self.index, self.store)

    # -- reporting --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        stats = self.store.stats()
        stats["index_faces"] = self.index.size
        stats["model"] = self.analyzer.backend.model.key
        stats["home"] = str(self.home)
        return stats


def open(home: str | Path | None = None, **overrides: Any) -> Facetrail:  # noqa: A001
    """Open (creating if needed) the facetrail data directory ``home``.

    Without ``home``, ``FACETRAIL_HOME`` or else the platform's user data directory is used.
    """
    return Facetrail(load_settings(home, **overrides))
