-- facetrail store, schema version 3: accounts, searches kept as records, reviews, ingest jobs.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(trim(name)) > 0),
    role        TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'reviewer', 'auditor')),
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);

-- Only sha256(token) is kept; the token itself is shown once, when it is made.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX tokens_user ON tokens(user_id);

-- Browser sessions opened with a token; only sha256(session id) is kept.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens(id),
    csrf        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    ended_at    TEXT
);

-- Uploaded probes; their bytes are kept under <home>/probes/ by sha256.
CREATE TABLE probes (
    sha256      TEXT PRIMARY KEY,
    bytes       INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    format      TEXT NOT NULL,
    faces       TEXT NOT NULL,              -- JSON [{box, det_score, quality}], largest first
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);

CREATE TABLE searches (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    case_ref      TEXT NOT NULL CHECK (length(trim(case_ref)) > 0),
    purpose       TEXT NOT NULL CHECK (length(trim(purpose)) > 0),
    probe_sha256  TEXT NOT NULL REFERENCES probes(sha256),
    probe_face    INTEGER NOT NULL,
    audit_id      INTEGER NOT NULL REFERENCES audit(id),
    result        TEXT NOT NULL,            -- JSON, facetrail.search/1 (docs/json.md)
    created_at    TEXT NOT NULL
);
CREATE INDEX searches_case ON searches(case_ref);

CREATE TABLE search_candidates (
    search_id  INTEGER NOT NULL REFERENCES searches(id),
    rank       INTEGER NOT NULL,
    face_id    INTEGER NOT NULL,
    score      REAL NOT NULL,
    PRIMARY KEY (search_id, face_id)
);

CREATE TABLE reviews (
    id          INTEGER PRIMARY KEY,
    search_id   INTEGER NOT NULL REFERENCES searches(id),
    face_id     INTEGER NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    decision    TEXT NOT NULL CHECK (decision IN ('confirm', 'reject')),
    note        TEXT NOT NULL,
    at          TEXT NOT NULL,
    FOREIGN KEY (search_id, face_id) REFERENCES search_candidates(search_id, face_id)
);
CREATE INDEX reviews_search ON reviews(search_id);

-- Ingest jobs started over HTTP; 'queued' and 'running' ones resume when the server starts.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    paths        TEXT NOT NULL,             -- JSON array; empty means the source's own uri
    status       TEXT NOT NULL CHECK (status IN
                     ('queued', 'running', 'completed', 'failed', 'cancelled')),
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_ids      TEXT NOT NULL DEFAULT '[]',  -- JSON array of ingest_runs ids
    progress     TEXT NOT NULL DEFAULT '{}',  -- JSON: counts and expected total
    error        TEXT
);
