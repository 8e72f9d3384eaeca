"""Image bytes, thumbnails and face crops, served only from what the store holds.

A request names an image by sha256 or a face by face_id, never by path. The bytes are read
from where the store says the image was found, only inside that source's folder
(``facetrail.sources.confine``), and only if they still hash to the sha256. Thumbnails
and crops are made once and cached under ``<home>/cache/``; their names carry the image's
``shown_version``, so that a face painted over since is never served from an older one.
Appearance URLs are data for the client; the server never fetches them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from PIL import Image

from facetrail import imaging
from facetrail.engine import Facetrail
from facetrail.errors import NotFoundError
from facetrail.records import Box
from facetrail.web.auth import Principal, require
from facetrail.web.deps import Id, Svc
from facetrail.web.rights import check_rights
from facetrail.web.searches import SHA256

router = APIRouter()

Reader = Annotated[Principal, Depends(require("analyst", "reviewer"))]


async def crop_viewer(request: Request) -> Principal:
    """An analyst or reviewer, or the admin who carries out erasures (403 for other admins)."""
    principal = await require("analyst", "reviewer", "admin")(request)
    if principal.role == "admin":
        check_rights(principal)
    return principal


CropViewer = Annotated[Principal, Depends(crop_viewer)]
Sha = Annotated[str, PathParam(pattern=SHA256)]
THUMB_SIDE = 320
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
        "BMP": "image/bmp", "TIFF": "image/tiff", "AVIF": "image/avif", "HEIF": "image/heif"}
CACHE_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
"""Images, probes and crops are biometric data: kept in no browser or proxy cache."""


# -- derived images, made once ---------------------------------------------------------------
def cached_jpeg(path: Path, make: bytes | None = None, variants: str | None = None
                ) -> bytes | None:
    """The kept file at ``path``; or, given ``make``, ``make`` kept there, and the other
    files matching the glob ``variants`` next to it (the same image shown before a face was
    painted over in it) deleted."""
    if path.exists():
        return path.read_bytes()
    if make is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(make)
    os.replace(tmp, path)
    for old in path.parent.glob(variants) if variants else ():
        if old != path:
            old.unlink(missing_ok=True)
    return make


def thumbnail(engine: Facetrail, data: bytes, side: int = THUMB_SIDE) -> bytes:
    decoded = imaging.decode(data, engine.settings)
    image = Image.fromarray(decoded.pixels)
    image.thumbnail((side, side))
    return imaging.jpeg(image)


def crop(engine: Facetrail, data: bytes, box: Box) -> bytes:
    """The face box with a margin (``imaging.face_crop``)."""
    return imaging.face_crop(data, box, engine.settings)


def jpeg_response(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers=CACHE_HEADERS)


# -- routes ----------------------------------------------------------------------------------
@router.get("/images/{sha256}", tags=["media"], response_class=Response)
def get_image(sha256: Sha, who: Reader, service: Svc) -> Response:
    """The original bytes of an indexed image; re-encoded with its erased and opted-out faces
    painted over, if it had any (``suppression.shown``)."""
    data = service.engine.image_bytes(sha256, actor=who.actor)
    try:
        with Image.open(io.BytesIO(data)) as opened:  # reads the header only
            fmt = opened.format or "?"
    except (OSError, ValueError):  # a format only facetrail's decoder registers (HEIF)
        fmt = "?"
    return Response(data, media_type=MIME.get(fmt, "application/octet-stream"),
                    headers=CACHE_HEADERS)


@router.get("/images/{sha256}/thumb", tags=["media"], response_class=Response)
def get_thumb(sha256: Sha, who: Reader, service: Svc) -> Response:
    engine = service.engine
    engine.check_image(sha256, actor=who.actor)  # a kept thumbnail too: never to others
    path = engine.home / "cache" / "thumbs" / f"{sha256}{engine.shown_version(sha256)}.jpg"
    data = cached_jpeg(path)
    if data is None:
        data = cached_jpeg(path, thumbnail(engine, engine.image_bytes(sha256, actor=who.actor)),
                           variants=f"{sha256}*.jpg")
    assert data is not None
    return jpeg_response(data)


@router.get("/faces/{face_id}/crop", tags=["media"], response_class=Response)
def get_face_crop(face_id: Id, who: CropViewer, service: Svc) -> Response:
    """The face, with a margin, cut from its image. Analysts and reviewers see their
    organisation's faces; the admin who carries out erasures sees any face, to check what an
    erasure or an opt-out takes."""
    engine = service.engine
    erasing = who.role == "admin"
    face = (engine.face_to_erase(face_id, actor=who.actor) if erasing
            else engine.face(face_id, actor=who.actor))
    sha = face.image.sha256
    path = engine.home / "cache" / "crops" / f"{face_id}-{sha[:16]}{engine.shown_version(sha)}.jpg"
    data = cached_jpeg(path)
    if data is None:
        image = (engine.image_to_erase(sha, actor=who.actor) if erasing
                 else engine.image_bytes(sha, actor=who.actor))
        data = cached_jpeg(path, crop(engine, image, face.box),
                           variants=f"{face_id}-{sha[:16]}*.jpg")
    assert data is not None
    return jpeg_response(data)


@router.get("/probes/{sha256}/image", tags=["media"], response_class=Response)
def get_probe_image(sha256: Sha, who: Reader, service: Svc) -> Response:
    """An uploaded probe, as uploaded."""
    probe = service.engine.probe(sha256, actor=who.actor)
    data = service.engine.probe_bytes(sha256, actor=who.actor)
    return Response(data, media_type=MIME.get(probe.format, "application/octet-stream"),
                    headers=CACHE_HEADERS)


@router.get("/probes/{sha256}/faces/{index}/crop", tags=["media"], response_class=Response)
def get_probe_crop(sha256: Sha, index: Id, who: Reader, service: Svc) -> Response:
    probe = service.engine.probe(sha256, actor=who.actor)
    if not 0 <= index < len(probe.faces):
        raise NotFoundError(f"probe {sha256} has no face {index}")
    path = service.engine.home / "cache" / "probe-crops" / f"{sha256}-{index}.jpg"
    data = cached_jpeg(path)
    if data is None:
        data_in = service.engine.probe_bytes(sha256, actor=who.actor)
        made = crop(service.engine, data_in, probe.faces[index].box)
        data = cached_jpeg(path, made)
    assert data is not None
    return jpeg_response(data)
