-- facetrail store, schema version 7: organisations. One deployment serves many agencies.
-- Every user and every source belongs to one organisation; a source can be shared with
-- another organisation, under a lawful basis and purpose of the sharing's own. Searches and
-- audit events name the organisation they were made for. Everything that existed before
-- belongs to the organisation 'default'. Migrations run with foreign keys off (store/sqlite.py)
-- and are checked with foreign_key_check before they commit.

CREATE TABLE orgs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(trim(name)) > 0),
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);
INSERT INTO orgs (id, name, created_at, created_by)
VALUES (1, 'default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'facetrail');

ALTER TABLE sources ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1 REFERENCES orgs(id);

-- A deployment-wide 'oversight' role joins the roles: the users table is made again.
CREATE TABLE users_v7 (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(trim(name)) > 0),
    role        TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'reviewer', 'auditor',
                                              'oversight')),
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    org_id      INTEGER NOT NULL DEFAULT 1 REFERENCES orgs(id)
);
INSERT INTO users_v7 (id, name, role, created_at, created_by)
SELECT id, name, role, created_at, created_by FROM users;
DROP TABLE users;
ALTER TABLE users_v7 RENAME TO users;

CREATE TABLE source_shares (
    source_id     INTEGER NOT NULL REFERENCES sources(id),
    org_id        INTEGER NOT NULL REFERENCES orgs(id),
    lawful_basis  TEXT NOT NULL CHECK (length(trim(lawful_basis)) > 0),
    purpose       TEXT NOT NULL CHECK (length(trim(purpose)) > 0),
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (source_id, org_id)
);
CREATE INDEX source_shares_org ON source_shares(org_id);

ALTER TABLE searches ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1 REFERENCES orgs(id);
CREATE INDEX searches_org ON searches(org_id, id);

-- Which organisations uploaded a probe: a probe is shown only to them.
CREATE TABLE probe_orgs (
    sha256  TEXT NOT NULL REFERENCES probes(sha256),
    org_id  INTEGER NOT NULL REFERENCES orgs(id),
    PRIMARY KEY (sha256, org_id)
);
INSERT INTO probe_orgs (sha256, org_id) SELECT sha256, 1 FROM probes;

-- The organisation an audit event belongs to (NULL: the deployment's own events). It is part
-- of the event's hash (audit.py), so an event cannot be moved to another organisation unseen.
ALTER TABLE audit ADD COLUMN org TEXT;
CREATE INDEX audit_org ON audit(org, id);

-- Leases instead of process ids: a run or job is held by one process (its holder) for as long
-- as that process renews the lease (heartbeat_at); one whose lease ran out was interrupted,
-- whichever host it ran on.
ALTER TABLE ingest_runs ADD COLUMN holder TEXT;
ALTER TABLE ingest_runs ADD COLUMN heartbeat_at TEXT;
ALTER TABLE jobs ADD COLUMN holder TEXT;
ALTER TABLE jobs ADD COLUMN heartbeat_at TEXT;
