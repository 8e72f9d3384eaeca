-- facetrail store, schema version 8: the rights of the people in the photos (docs/rights.md).
-- Erasure leaves tombstones that hold no biometric data: which face was erased, when and why,
-- and the box it had in its image, so that analysing that image again (another face model)
-- does not bring the face back. Opt-outs keep templates and photo hashes, never photos.
-- Appearances a re-ingest no longer finds are marked gone, not deleted.

ALTER TABLE appearances ADD COLUMN gone_at TEXT;   -- NULL: still where it was seen
ALTER TABLE appearances ADD COLUMN gone_run INTEGER;   -- the ingest run that found it gone
ALTER TABLE appearances ADD COLUMN seen_run INTEGER;   -- the last ingest run that found it there
-- The manifest or web archive that listed it (NULL: a file found by walking a folder).
ALTER TABLE appearances ADD COLUMN listing TEXT;

CREATE TABLE erasures (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    kind        TEXT NOT NULL,                 -- face, image, source, photo, optout, retention
    target      TEXT NOT NULL,                 -- face ids, sha256, source name, reference
    reason      TEXT NOT NULL CHECK (length(trim(reason)) > 0),
    counts      TEXT NOT NULL DEFAULT '{}'     -- JSON: faces, images, appearances, searches
);

CREATE TABLE erased_faces (
    face_id       INTEGER PRIMARY KEY,
    erasure_id    INTEGER NOT NULL REFERENCES erasures(id),
    image_sha256  TEXT NOT NULL,
    box           TEXT NOT NULL                 -- JSON [x, y, w, h]
);
CREATE INDEX erased_faces_image ON erased_faces(image_sha256);

-- Images erased by name (not by retention or a source's removal): never ingested again.
CREATE TABLE erased_images (
    sha256      TEXT PRIMARY KEY,
    erasure_id  INTEGER NOT NULL REFERENCES erasures(id)
);

CREATE TABLE optouts (
    reference   TEXT PRIMARY KEY CHECK (length(trim(reference)) > 0),
    note        TEXT NOT NULL DEFAULT '',
    photos      INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    org_id      INTEGER NOT NULL DEFAULT 1 REFERENCES orgs(id)
);

CREATE TABLE optout_templates (
    id            INTEGER PRIMARY KEY,
    reference     TEXT NOT NULL REFERENCES optouts(reference) ON DELETE CASCADE,
    model_id      INTEGER NOT NULL REFERENCES models(id),
    photo_sha256  TEXT NOT NULL,
    embedding     BLOB NOT NULL                 -- float32, little-endian, model dim
);
CREATE INDEX optout_templates_model ON optout_templates(model_id);

-- A probe past its retention keeps its row (searches name it) but not its bytes.
ALTER TABLE probes ADD COLUMN expired_at TEXT;

ALTER TABLE ingest_runs ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ingest_runs ADD COLUMN gone INTEGER NOT NULL DEFAULT 0;
