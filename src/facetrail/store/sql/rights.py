"""Erasure and its tombstones, opt-out templates, expiry of probes and kept searches."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from facetrail.audit import utc_now
from facetrail.errors import ConflictError, NotFoundError
from facetrail.store.base import (
    EraseSelector,
    ErasureRow,
    ErasureScope,
    HeldAppearance,
    HeldImage,
    OptoutRow,
    Tombstone,
)
from facetrail.store.sql.core import Conn, IntegrityViolation, SQLCore
from facetrail.store.sql.ingest import appearance

CHUNK = 500
"""Ids per ``IN (…)`` list: well under every engine's limit on bound parameters."""


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


class RightsTables(SQLCore):
    # -- what an erasure takes ----------------------------------------------------------------
    def erasure_scope(self, selector: EraseSelector) -> ErasureScope:
        db = self._db
        faces = set(self._existing_faces(db, selector.face_ids))
        images: set[int] = set()
        appearances: set[int] = set()
        for part in chunks(list(dict.fromkeys(selector.sha256s))):
            rows = db.execute(f"SELECT id FROM images WHERE sha256 IN ({marks(part)})",
                              tuple(part)).fetchall()
            images |= {int(r[0]) for r in rows}
        for part in chunks(sorted(images)):
            appearances |= {int(r[0]) for r in db.execute(
                f"SELECT id FROM appearances WHERE image_id IN ({marks(part)})", tuple(part))}
        if selector.source_id is not None:
            def taken(alias: str) -> str:
                cond = f"{alias}.source_id = ?"
                if selector.created_before is not None:
                    cond += f" AND {alias}.created_at < ?"
                return cond

            args = (selector.source_id,) + (
                () if selector.created_before is None else (selector.created_before,))
            appearances |= {int(r[0]) for r in db.execute(
                f"SELECT a.id FROM appearances a WHERE {taken('a')}", args)}
            # Images every appearance of which goes: nothing else reached them.
            images |= {int(r[0]) for r in db.execute(
                f"SELECT DISTINCT a.image_id FROM appearances a WHERE {taken('a')}"
                " AND NOT EXISTS (SELECT 1 FROM appearances b WHERE b.image_id = a.image_id"
                f" AND NOT ({taken('b')}))", args * 2)}
        for part in chunks(sorted(images)):
            faces |= {int(r[0]) for r in db.execute(
                f"SELECT id FROM faces WHERE image_id IN ({marks(part)})", tuple(part))}
        shas: list[str] = []
        for part in chunks(sorted(images)):
            shas += [str(r[0]) for r in db.execute(
                f"SELECT sha256 FROM images WHERE id IN ({marks(part)})", tuple(part))]
        searches: set[int] = set()
        for part in chunks(sorted(faces)):
            searches |= {int(r[0]) for r in db.execute(
                "SELECT DISTINCT search_id FROM search_candidates"
                f" WHERE face_id IN ({marks(part)})",
                tuple(part))}
        return ErasureScope(faces=tuple(sorted(faces)), images=tuple(sorted(images)),
                            sha256s=tuple(sorted(set(shas))),
                            appearances=tuple(sorted(appearances)),
                            searches=tuple(sorted(searches)))

    @staticmethod
    def _existing_faces(db: Conn, face_ids: Sequence[int]) -> list[int]:
        ids = sorted({int(i) for i in face_ids})
        found: list[int] = []
        for part in chunks(ids):
            found += [int(r[0]) for r in db.execute(
                f"SELECT id FROM faces WHERE id IN ({marks(part)})", tuple(part))]
        missing = sorted(set(ids) - set(found))
        if missing:
            raise NotFoundError(f"no face {', '.join(map(str, missing[:10]))} in the store"
                                " (erased already, or never there)")
        return found

    # -- erasing --------------------------------------------------------------------------------
    def erase(self, scope: ErasureScope, *, kind: str, target: str, reason: str, actor: str,
              block_images: bool = False, remove_source: int | None = None) -> ErasureRow:
        now = utc_now()
        counts = scope.counts()
        with self._tx() as db:
            erasure_id = self._insert(
                db, "INSERT INTO erasures (at, actor, kind, target, reason, counts)"
                " VALUES (?,?,?,?,?,?)",
                (now, actor, kind, target, reason, json.dumps(counts, sort_keys=True)))
            faces = list(scope.faces)
            for part in chunks(faces):
                db.execute(
                    "INSERT INTO erased_faces (face_id, erasure_id, image_sha256, box)"
                    " SELECT f.id, ?, i.sha256, '[' || f.x || ',' || f.y || ',' || f.w || ','"
                    " || f.h || ']' FROM faces f JOIN images i ON i.id = f.image_id"
                    f" WHERE f.id IN ({marks(part)}) ON CONFLICT(face_id) DO NOTHING",
                    (erasure_id, *part))
                # An image keeping some faces counts only those left.
                db.execute(
                    "UPDATE images SET face_count = face_count - (SELECT count(*) FROM faces f"
                    f" WHERE f.image_id = images.id AND f.id IN ({marks(part)}))"
                    f" WHERE id IN (SELECT image_id FROM faces WHERE id IN ({marks(part)}))",
                    (*part, *part))
                db.execute(f"DELETE FROM faces WHERE id IN ({marks(part)})", tuple(part))
            for part in chunks(list(scope.appearances)):
                db.execute(f"DELETE FROM appearances WHERE id IN ({marks(part)})", tuple(part))
            for part in chunks(list(scope.images)):
                db.execute(f"DELETE FROM images WHERE id IN ({marks(part)})", tuple(part))
            if block_images:
                db.executemany(
                    "INSERT INTO erased_images (sha256, erasure_id) VALUES (?,?)"
                    " ON CONFLICT(sha256) DO NOTHING",
                    [(sha, erasure_id) for sha in scope.sha256s])
            self._tombstone_results(db, scope, erasure_id, now, kind, reason)
            if remove_source is not None:
                self._remove_source(db, remove_source)
        return ErasureRow(erasure_id, now, actor, kind, target, reason, counts)

    @staticmethod
    def _tombstone_results(db: Conn, scope: ErasureScope, erasure_id: int, at: str,
                           kind: str, reason: str) -> None:
        """Replace erased candidates in kept results by what may be said of them."""
        gone = set(scope.faces)
        for part in chunks(list(scope.searches)):
            rows = db.execute(f"SELECT id, result FROM searches WHERE id IN ({marks(part)})",
                              tuple(part)).fetchall()
            for row in rows:
                result = json.loads(row[1])
                result["candidates"] = [
                    {"rank": c["rank"], "probe_face": c.get("probe_face", 0),
                     "face_id": c["face_id"], "score": c["score"],
                     "erased": {"at": at, "kind": kind, "reason": reason,
                                "erasure_id": erasure_id}}
                    if c.get("face_id") in gone and "erased" not in c else c
                    for c in result.get("candidates", [])
                ]
                db.execute("UPDATE searches SET result=? WHERE id=?",
                           (json.dumps(result), row[0]))

    @staticmethod
    def _remove_source(db: Conn, source_id: int) -> None:
        left = db.execute("SELECT count(*) FROM appearances WHERE source_id=?",
                          (source_id,)).fetchone()[0]
        if left:
            raise ConflictError(f"the source still has {left} appearances; nothing changed")
        db.execute("DELETE FROM jobs WHERE source_id=?", (source_id,))
        db.execute("DELETE FROM ingest_errors WHERE source_id=?", (source_id,))
        db.execute("DELETE FROM ingest_runs WHERE source_id=?", (source_id,))
        db.execute("DELETE FROM source_shares WHERE source_id=?", (source_id,))
        db.execute("DELETE FROM sources WHERE id=?", (source_id,))

    def scrub(self) -> list[str]:
        return self.dialect.scrub(self._db.raw)

    def erasures(self, limit: int = 200) -> list[ErasureRow]:
        rows = self._db.execute(
            "SELECT id, at, actor, kind, target, reason, counts FROM erasures"
            " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [ErasureRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], json.loads(r[6]))
                for r in rows]

    def tombstones(self, face_ids: Sequence[int]) -> dict[int, Tombstone]:
        out: dict[int, Tombstone] = {}
        for part in chunks(sorted({int(i) for i in face_ids})):
            for r in self._db.execute(
                "SELECT t.face_id, e.id, e.at, e.kind, e.reason FROM erased_faces t"
                f" JOIN erasures e ON e.id = t.erasure_id WHERE t.face_id IN ({marks(part)})",
                tuple(part),
            ):
                out[int(r[0])] = Tombstone(int(r[0]), int(r[1]), r[2], r[3], r[4])
        return out

    def erased_boxes(self, sha256: str) -> list[tuple[int, int, int, int]]:
        # Faces erased by name stay erased; those that expired or went with their source may
        # come back with a new ingest, as a new holding. Faces that ingest left out as
        # opted out are held back as they are.
        rows = self._db.execute(
            "SELECT t.box FROM erased_faces t JOIN erasures e ON e.id = t.erasure_id"
            " WHERE t.image_sha256=? AND e.kind IN ('face', 'photo', 'optout', 'image')"
            " UNION SELECT box FROM suppressed_faces WHERE image_sha256=?",
            (sha256, sha256)).fetchall()
        return sorted({tuple(json.loads(r[0])) for r in rows})

    def erased_image(self, sha256: str) -> bool:
        return self._db.execute("SELECT 1 FROM erased_images WHERE sha256=?",
                                (sha256,)).fetchone() is not None

    def embeddings(self, face_ids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for part in chunks(sorted({int(i) for i in face_ids})):
            for r in self._db.execute(
                f"SELECT id, embedding FROM faces WHERE id IN ({marks(part)})", tuple(part)
            ):
                out[int(r[0])] = np.frombuffer(bytes(r[1]), dtype="<f4").astype(np.float32)
        return out

    # -- opt-outs -------------------------------------------------------------------------------
    def add_optout(self, reference: str, note: str, photos: int, actor: str, org_id: int,
                   templates: Sequence[tuple[int, str, np.ndarray]]) -> OptoutRow:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO optouts (reference, note, photos, created_at, created_by,"
                    " org_id) VALUES (?,?,?,?,?,?)",
                    (reference, note, photos, utc_now(), actor, org_id))
                db.executemany(
                    "INSERT INTO optout_templates (reference, model_id, photo_sha256, embedding)"
                    " VALUES (?,?,?,?)",
                    [(reference, model_id, sha, np.ascontiguousarray(v, "<f4").tobytes())
                     for model_id, sha, v in templates])
        except IntegrityViolation as exc:
            raise ConflictError(f"an opt-out with reference {reference!r} exists already"
                                ) from exc
        return self._optout(reference)

    def _optout(self, reference: str) -> OptoutRow:
        rows = [r for r in self._optout_rows("WHERE o.reference = ?", (reference,))]
        if not rows:
            raise NotFoundError(f"no opt-out with reference {reference!r}")
        return rows[0]

    def _optout_rows(self, where: str, args: tuple[Any, ...]) -> Iterable[OptoutRow]:
        for r in self._db.execute(
            "SELECT o.reference, o.note, o.photos, (SELECT count(*) FROM optout_templates t"
            " WHERE t.reference = o.reference), o.created_at, o.created_by, g.name"
            f" FROM optouts o JOIN orgs g ON g.id = o.org_id {where} ORDER BY o.created_at,"
            " o.reference", args,
        ):
            yield OptoutRow(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5], r[6])

    def optouts(self) -> list[OptoutRow]:
        return list(self._optout_rows("", ()))

    def remove_optout(self, reference: str) -> OptoutRow:
        row = self._optout(reference)
        with self._tx() as db:
            db.execute("DELETE FROM optout_templates WHERE reference=?", (reference,))
            db.execute("DELETE FROM optouts WHERE reference=?", (reference,))
        return row

    def optout_templates(self, model_id: int) -> tuple[list[str], np.ndarray]:
        rows = self._db.execute(
            "SELECT reference, embedding FROM optout_templates WHERE model_id=? ORDER BY id",
            (model_id,)).fetchall()
        if not rows:
            return [], np.empty((0, 0), np.float32)
        matrix = np.stack([np.frombuffer(bytes(r[1]), dtype="<f4") for r in rows])
        return [str(r[0]) for r in rows], matrix.astype(np.float32)

    def optout_version(self, model_id: int) -> tuple[object, ...]:
        # An addition is the newest opt-out; a removal alone lowers the count; a removal and an
        # addition (ids may be reused) change the newest opt-out's time.
        row = self._db.execute(
            "SELECT count(*), max(t.id), max(o.created_at) FROM optout_templates t"
            " JOIN optouts o ON o.reference = t.reference WHERE t.model_id=?",
            (model_id,)).fetchone()
        return (int(row[0]), row[1], row[2])

    # -- expiry of casework ---------------------------------------------------------------------
    def expire_probes(self, before: str) -> list[str]:
        with self._tx() as db:
            rows = db.execute(
                "UPDATE probes SET expired_at=? WHERE expired_at IS NULL AND created_at < ?"
                " RETURNING sha256", (utc_now(), before)).fetchall()
        return sorted(str(r[0]) for r in rows)

    def expiring_probes(self, before: str) -> list[str]:
        return [str(r[0]) for r in self._db.execute(
            "SELECT sha256 FROM probes WHERE expired_at IS NULL AND created_at < ?"
            " ORDER BY sha256", (before,))]

    def expiring_searches(self, before: str) -> list[int]:
        return [int(r[0]) for r in self._db.execute(
            "SELECT id FROM searches WHERE created_at < ? ORDER BY id", (before,))]

    def delete_searches(self, search_ids: Sequence[int]) -> int:
        deleted = 0
        with self._tx() as db:
            for part in chunks(list(search_ids)):
                db.execute(f"DELETE FROM reviews WHERE search_id IN ({marks(part)})",
                           tuple(part))
                db.execute(f"DELETE FROM search_candidates WHERE search_id IN ({marks(part)})",
                           tuple(part))
                deleted += db.execute(f"DELETE FROM searches WHERE id IN ({marks(part)})",
                                      tuple(part)).rowcount
        return deleted

    # -- subject access -------------------------------------------------------------------------
    def held_images(self, sha256s: Sequence[str], model_id: int) -> dict[str, HeldImage]:
        db = self._db
        images: dict[int, Any] = {}
        for part in chunks(sorted(set(sha256s))):
            for r in db.execute(
                "SELECT id, sha256, bytes, format, width, height, created_at FROM images"
                f" WHERE model_id=? AND sha256 IN ({marks(part)})", (model_id, *part)):
                images[int(r["id"])] = r
        seen: dict[int, list[HeldAppearance]] = {i: [] for i in images}
        for part in chunks(sorted(images)):
            for a in db.execute(
                "SELECT a.image_id, s.name, a.location, a.source_url, a.page_urls,"
                " a.captured_at, a.title, a.record_id, a.created_at, a.gone_at"
                " FROM appearances a JOIN sources s ON s.id = a.source_id"
                f" WHERE a.image_id IN ({marks(part)}) ORDER BY s.name, a.location",
                tuple(part)):
                seen[int(a["image_id"])].append(
                    HeldAppearance(appearance(a), a["created_at"], a["gone_at"]))
        return {
            r["sha256"]: HeldImage(
                sha256=r["sha256"], bytes=int(r["bytes"]), format=r["format"],
                width=int(r["width"]), height=int(r["height"]), created_at=r["created_at"],
                appearances=tuple(seen[image_id]))
            for image_id, r in images.items()
        }
