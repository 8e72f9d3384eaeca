-- facetrail store, schema version 6: searches and reviews made on the command line. Their
-- actor is the local operator (the OS user), who has no account: user_id may be NULL, and
-- every search and review names its actor (a user name, or the OS user), as the audit does.
--
-- SQLite cannot drop a NOT NULL in place, and a table others refer to cannot be dropped while
-- foreign keys are on. So the three case tables are copied aside, dropped children first,
-- made again (search_candidates unchanged) and filled back, in the migration's transaction.

CREATE TABLE v5_searches AS SELECT s.*, u.name AS actor FROM searches s JOIN users u ON u.id = s.user_id;
CREATE TABLE v5_search_candidates AS SELECT * FROM search_candidates;
CREATE TABLE v5_reviews AS SELECT r.*, u.name AS actor FROM reviews r JOIN users u ON u.id = r.user_id;
DROP TABLE reviews;
DROP TABLE search_candidates;
DROP TABLE searches;

CREATE TABLE searches (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER REFERENCES users(id),  -- NULL: the local operator
    case_ref      TEXT NOT NULL CHECK (length(trim(case_ref)) > 0),
    purpose       TEXT NOT NULL CHECK (length(trim(purpose)) > 0),
    probe_sha256  TEXT NOT NULL REFERENCES probes(sha256),
    probe_face    INTEGER NOT NULL,
    audit_id      INTEGER NOT NULL REFERENCES audit(id),
    result        TEXT NOT NULL,            -- JSON, facetrail.search/1 (docs/json.md)
    created_at    TEXT NOT NULL,
    actor         TEXT NOT NULL CHECK (length(trim(actor)) > 0)
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
    user_id     INTEGER REFERENCES users(id),  -- NULL: the local operator
    decision    TEXT NOT NULL CHECK (decision IN ('confirm', 'reject')),
    note        TEXT NOT NULL,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL CHECK (length(trim(actor)) > 0),
    FOREIGN KEY (search_id, face_id) REFERENCES search_candidates(search_id, face_id)
);
CREATE INDEX reviews_search ON reviews(search_id);

INSERT INTO searches (id, user_id, case_ref, purpose, probe_sha256, probe_face, audit_id,
                      result, created_at, actor)
SELECT id, user_id, case_ref, purpose, probe_sha256, probe_face, audit_id, result,
       created_at, actor FROM v5_searches;
INSERT INTO search_candidates (search_id, rank, face_id, score)
SELECT search_id, rank, face_id, score FROM v5_search_candidates;
INSERT INTO reviews (id, search_id, face_id, user_id, decision, note, at, actor)
SELECT id, search_id, face_id, user_id, decision, note, at, actor FROM v5_reviews;
DROP TABLE v5_searches;
DROP TABLE v5_search_candidates;
DROP TABLE v5_reviews;
