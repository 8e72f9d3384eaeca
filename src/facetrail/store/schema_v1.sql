-- facetrail store, schema version 1. The store is the source of truth; the vector index is
-- derived from the faces table and can be rebuilt from it at any time.

CREATE TABLE sources (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    uri             TEXT NOT NULL,
    lawful_basis    TEXT NOT NULL CHECK (length(trim(lawful_basis)) > 0),
    purpose         TEXT NOT NULL CHECK (length(trim(purpose)) > 0),
    retention_days  INTEGER CHECK (retention_days IS NULL OR retention_days > 0),
    created_at      TEXT NOT NULL,
    created_by      TEXT NOT NULL
);

CREATE TABLE models (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    info        TEXT NOT NULL,          -- JSON: name, version, dim, alignment, normalisation, metric
    created_at  TEXT NOT NULL
);

CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL,
    model_id    INTEGER NOT NULL REFERENCES models(id),
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    format      TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    face_count  INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (sha256, model_id)
);

CREATE TABLE appearances (
    id           INTEGER PRIMARY KEY,
    image_id     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    location     TEXT NOT NULL,
    fingerprint  TEXT,
    source_url   TEXT,
    page_urls    TEXT NOT NULL DEFAULT '[]',   -- JSON array
    captured_at  TEXT,
    title        TEXT,
    record_id    TEXT,
    run_id       INTEGER REFERENCES ingest_runs(id),
    created_at   TEXT NOT NULL,
    UNIQUE (source_id, location, image_id)
);
CREATE INDEX appearances_image ON appearances(image_id);
CREATE INDEX appearances_location ON appearances(source_id, location);

CREATE TABLE faces (
    id          INTEGER PRIMARY KEY,
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    model_id    INTEGER NOT NULL REFERENCES models(id),
    detector    TEXT NOT NULL,
    ordinal     INTEGER NOT NULL,            -- 0 = largest face of the image
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,
    landmarks   TEXT NOT NULL,               -- JSON [[x, y], ...], dlib 5-point order
    det_score   REAL NOT NULL,
    quality     REAL NOT NULL,
    sharpness   REAL NOT NULL,
    embedding   BLOB NOT NULL,               -- float32, little-endian, model dim
    UNIQUE (image_id, model_id, ordinal)
);
CREATE INDEX faces_model ON faces(model_id, id);

CREATE TABLE ingest_runs (
    id           INTEGER PRIMARY KEY,
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    paths        TEXT NOT NULL,              -- JSON array
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    os_user      TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    items        INTEGER NOT NULL DEFAULT 0,
    images_new   INTEGER NOT NULL DEFAULT 0,
    duplicates   INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    faces        INTEGER NOT NULL DEFAULT 0,
    errors       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE ingest_errors (
    id         INTEGER PRIMARY KEY,
    source_id  INTEGER NOT NULL REFERENCES sources(id),
    location   TEXT NOT NULL,
    code       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    run_id     INTEGER REFERENCES ingest_runs(id),
    at         TEXT NOT NULL,
    UNIQUE (source_id, location)
);

-- Append-only, hash-chained: hash = sha256(prev_hash || canonical JSON of the event).
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    case_ref   TEXT,
    purpose    TEXT,
    details    TEXT NOT NULL,                -- canonical JSON
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
