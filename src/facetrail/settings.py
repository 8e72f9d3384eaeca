"""All of facetrail's configuration, in one object.

Every field can be set from the environment with the ``FACETRAIL_`` prefix, for example
``FACETRAIL_WORKERS=4`` or ``FACETRAIL_MAX_PIXELS=100000000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from facetrail.errors import ConfigError


def default_home() -> Path:
    """The platform's user data directory, e.g. ``~/.local/share/facetrail`` on Linux."""
    return Path(platformdirs.user_data_dir("facetrail", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACETRAIL_", extra="forbid")

    home: Path = Field(
        default_factory=default_home,
        description="Data directory holding the store and the index.",
    )

    @field_validator("home", mode="before")
    @classmethod
    def _home_is_named(cls, value: object) -> object:
        """An empty FACETRAIL_HOME is a mistake, never the current directory."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: name a data directory, or unset it for the default")
        return value

    store_url: str | None = Field(
        default=None,
        description="The store, by URL: 'sqlite:///PATH' (one file; one process writes at a "
        "time) or 'postgresql://USER@HOST:PORT/DATABASE' (many processes and hosts; needs the "
        "postgres extra; docs/postgres.md). Unset: sqlite:///<home>/facetrail.db.",
    )
    lease_seconds: float = Field(
        default=60.0,
        gt=1.0,
        description="How long an ingest run stays held by its process without a heartbeat "
        "(it renews every quarter of this). A run whose holder stopped renewing, on any host, "
        "is recorded as interrupted and its source may be ingested again.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="Ingest worker processes; 0 means one per CPU core.",
    )
    executor: str = Field(
        default="local",
        description="Where ingest and reembed read and analyse images: 'local' (worker "
        "processes on this machine, FACETRAIL_WORKERS of them; one worker analyses in the "
        "ingesting process itself) or 'ray' (Ray actors, FACETRAIL_WORKERS of them or one per "
        "CPU of the Ray cluster; needs the ray extra; docs/ray.md).",
    )
    ingest_writes: str = Field(
        default="driver",
        pattern="^(driver|workers)$",
        description="Who writes what ingest workers analyse to the store: 'driver' (the "
        "ingesting process, one transaction per image) or 'workers' (each worker commits the "
        "images it analysed itself, and sends back counts only; needs a PostgreSQL store; "
        "docs/ray.md measures both).",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster the 'ray' executor joins, as HOST:PORT of its head (what "
        "'ray start --head' prints). Unset: the executor starts a Ray of its own on this "
        "machine, listening on 127.0.0.1 only, and stops it when the run ends.",
    )
    face_model: str | None = Field(
        default=None,
        description="Face model of a new data directory: 'yunet-sface' (YuNet detector + SFace "
        "recogniser, cosine; the default), 'dlib' (HOG + ResNet, Euclidean), 'dlib-cnn', or a "
        "model declared with 'facetrail models add'. A data directory keeps the model it was "
        "made with (or moved to with 'facetrail reembed' and 'facetrail models use'); naming "
        "another one here is an error, not a silent switch (docs/models.md).",
    )
    min_face_px: int = Field(
        default=16,
        ge=1,
        description="Faces whose box is smaller than this on its shorter side, in pixels of the "
        "photo, are not kept: below it a face holds too little to be recognised (SFace on the "
        "fixture pairs with one photo shrunk: 34 % of true pairs pass at 12 px, 73 % at 16 px, "
        "97 % at 24 px; docs/detection.md).",
    )
    yunet_threshold: float = Field(
        default=0.6,
        gt=0.0,
        lt=1.0,
        description="Score a YuNet detection needs (0..1), chosen from measurements on the "
        "fixtures (docs/detection.md).",
    )
    descriptor_runtime: str = Field(
        default="auto",
        description="Runtime of the face descriptor: 'onnx' (ONNX Runtime, needs the onnx "
        "extra), 'dlib', or 'auto' (ONNX Runtime when installed, else dlib). Both give the same "
        "vectors (docs/runtime.md).",
    )
    descriptor_threads: int = Field(
        default=0,
        ge=0,
        description="Threads of the ONNX face models in each process; 0 means the CPU cores "
        "divided among the ingest workers (at least 1).",
    )

    # Input limits: anything over them is recorded as an ingest error, never decoded.
    max_image_bytes: int = Field(
        default=64 * 1024 * 1024, description="Largest encoded image accepted, in bytes."
    )
    max_pixels: int = Field(
        default=64_000_000,
        description="Largest decoded image accepted, in pixels (width x height). Guards "
        "against decompression bombs: a 64 MP RGB image takes 192 MB decoded.",
    )
    max_side: int = Field(
        default=20_000, description="Largest accepted width or height, in pixels."
    )
    min_side: int = Field(default=16, description="Smallest accepted width or height, in pixels.")

    # Detection geometry: see faces/geometry.py for how these interact.
    detect_grid: int = Field(
        default=3200,
        description="Longest side, in pixels, of the grid the HOG detector scans. Images up to "
        "half this size are upsampled x2 (faces down to 40 px are found); larger ones are "
        "scaled so that the scanned grid is this size (docs/detection.md).",
    )

    hog_grey: bool = Field(
        default=True,
        description="Run the HOG detector on grey levels (30% faster than on RGB).",
    )
    hog_threshold: float = Field(
        default=-0.2,
        description="HOG detection threshold (dlib's adjust_threshold; dlib's default is 0). "
        "-0.2 on grey levels finds every face that 0 on RGB finds on the fixtures.",
    )

    # Search.
    threshold: float | None = Field(
        default=None,
        description="Default minimum score for a candidate, and the floor under the calibrated "
        "threshold. Unset, the face model's own floor is used: 0.45 for dlib (score = 1 - "
        "Euclidean distance), 0.40 for SFace (score = cosine similarity); both keep every "
        "open-set fixture probe below them (docs/scores.md).",
    )
    min_quality: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Indexed faces whose quality is below this are kept and flagged but left "
        "out of results (tiny or blurred faces give false leads); 0 includes them.",
    )
    top: int = Field(default=20, ge=1, description="Default number of candidates.")

    # The rights of the people in the photos (docs/rights.md).
    optout_threshold: float | None = Field(
        default=None,
        description="Score at or above which an indexed or newly ingested face matches an "
        "opt-out template: it is erased, suppressed at ingest and left out of results. Unset: "
        "the face model's floor (0.40 for SFace, 0.45 for dlib), the score at which a search "
        "would show it as a lead (docs/rights.md gives the measured rates).",
    )
    probe_retention_days: int = Field(
        default=2, ge=1,
        description="Days an uploaded probe photo is kept; 'retention sweep' then deletes its "
        "bytes (the search records keep its hash).",
    )
    search_retention_days: int = Field(
        default=7, ge=1,
        description="Days a kept search result and its reviews are kept before 'retention "
        "sweep' deletes them (the audit log keeps the fact of the search).",
    )
    sweep_minutes: float = Field(
        default=60.0, ge=0.0,
        description="'facetrail serve' runs the retention sweep this often (0: never; run "
        "'facetrail retention sweep' from a scheduler instead).",
    )

    # Calibrated scores (docs/calibration.md).
    fpir_target: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="With a calibration, the default threshold is raised as the gallery grows "
        "so that gallery faces x FMR(threshold), the expected false candidates per search, "
        "stays at most this. FACETRAIL_THRESHOLD stays the floor.",
    )
    fusion: str = Field(
        default="mean",
        description="How several probe photos of one person are combined: 'mean' (mean of "
        "their descriptors) or 'max' (each photo searched, best score kept) (docs/scores.md).",
    )

    # HTTP server (facetrail serve).
    host: str = Field(
        default="127.0.0.1",
        description="Address 'facetrail serve' binds to; localhost unless set otherwise.",
    )
    port: int = Field(default=8000, ge=0, le=65535, description="Port of 'facetrail serve'.")
    session_hours: float = Field(
        default=12.0, gt=0, description="Lifetime of a browser session after login, in hours."
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1,
        description="Largest probe upload accepted over HTTP, in bytes; larger ones get 413 "
        "(upload_too_large) before they are decoded. Decoded probes are then held to "
        "max_pixels (422, image_too_large).",
    )
    search_rate: int = Field(
        default=30,
        ge=1,
        description="Searches one user may make over HTTP per rate window; more get 429 "
        "(rate_limited).",
    )
    search_rate_window: int = Field(
        default=60, ge=1, description="Length of the search rate window, in seconds."
    )
    login_failures: int = Field(
        default=10,
        ge=1,
        description="Failed logins (or unknown bearer tokens) one client address may make per "
        "login_failure_window over HTTP; then its logins get 429 (rate_limited) until the "
        "window allows one (facetrail.web.denials).",
    )
    login_failure_window: int = Field(
        default=60, ge=1, description="Length of the failed-login window, in seconds."
    )

    # Vector index (docs/index.md).
    index_backend: str = Field(
        default="faiss",
        description="Vector index back end: 'faiss' (FAISS files in the data directory's "
        "index/ folder, tuned by the settings after this one) or 'milvus' (a collection per "
        "face model on the Milvus server FACETRAIL_MILVUS_URI; needs the milvus extra; "
        "docs/milvus.md). The index is derived from the store, so changing back end loses "
        "nothing: the new one is built from the store when first opened.",
    )
    milvus_uri: str = Field(
        default="http://127.0.0.1:19530",
        description="The Milvus server of the 'milvus' index back end (standalone or "
        "distributed, 2.3 or later). 'bash scripts/milvus-local.sh start DIR' starts one on "
        "loopback and prints its URI.",
    )
    milvus_token: str | None = Field(
        default=None,
        description="Credentials for the Milvus server, 'USER:PASSWORD' or an API key; set it "
        "in the environment, never in a file of the repository. Unset: none.",
    )
    milvus_collection_prefix: str = Field(
        default="facetrail",
        description="Start of the names of facetrail's Milvus collections "
        "(<prefix>_<model>_<hash>_g<generation>): data directories sharing one server need "
        "prefixes of their own.",
    )
    # FAISS tiers (docs/index.md); Milvus uses the exact limit and the recall settings.
    index_exact_max_faces: int = Field(
        default=100_000,
        ge=0,
        description="Galleries up to this many faces are searched exactly (flat float32). "
        "Larger ones use an approximate index (FAISS: IVF lists, HNSW coarse quantizer, SQ8 "
        "or PQ codes, whose shortlists are re-ranked exactly; Milvus: HNSW).",
    )
    index_memory_mb: float = Field(
        default=8192,
        gt=0,
        description="RAM budget of the vector index, in MiB: codes and face ids (the float32 "
        "re-rank vectors are memory-mapped from disk and not counted). Exact search (4 x dim "
        "+ 8 bytes per face) is kept only if it fits; SQ8 (dim + 8) only if it fits; PQ "
        "fast-scan codes take 40.",
    )
    index_codes: Literal["pq", "sq8"] = Field(
        default="pq",
        description="Codes of the approximate index: 'pq' (4-bit product quantizer with SIMD "
        "fast scan, 40 bytes per face, the fastest at a given recall) or 'sq8' (8-bit scalar, "
        "136 bytes per face, falls back to 'pq' when over the memory budget).",
    )
    index_recall_floor: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        description="An approximate index is used only if its recall@10 against exact search, "
        "measured when it is built, reaches this with margin (the measurement's lower "
        "confidence bound, 2 standard errors under it, does); otherwise the previous index "
        "stays.",
    )
    index_recall_queries: int = Field(
        default=500,
        ge=10,
        description="Queries sampled (stored faces plus noise) to measure recall@10 when an "
        "approximate index is built.",
    )
    index_max_nprobe: int = Field(
        default=1024,
        ge=1,
        description="Most IVF lists a search may probe. Tuning raises nprobe up to this until "
        "the recall floor is met; a higher cap allows slower, more exhaustive searches.",
    )
    index_regrow_factor: float = Field(
        default=2.0,
        gt=1.0,
        description="An approximate index is rebuilt automatically once the gallery has grown "
        "by this factor since it was built (or since a refused build).",
    )


def load_settings(home: Path | str | None = None, **overrides: object) -> Settings:
    """Settings from the environment, with an explicit ``home`` and overrides on top."""
    if home is not None:
        overrides["home"] = home if isinstance(home, Path) else str(home)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError("; ".join(
            f"setting FACETRAIL_{'_'.join(map(str, e['loc'])).upper()}: "
            + e["msg"].removeprefix("Value error, ") for e in exc.errors()
        )) from exc


def settings_table() -> str:
    """The settings as a Markdown table: the body of docs/settings.md."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = (
            "platform user data dir" if field.default_factory is not None else repr(field.default)
        )
        rows.append(f"| `FACETRAIL_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows) + "\n"
