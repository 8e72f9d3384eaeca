-- facetrail store on PostgreSQL, schema version 9: rate limits that every server process
-- counts together (schema_v9.sql says what the table is for).

CREATE TABLE rate_events (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX rate_events_key ON rate_events(kind, key, at);
CREATE INDEX rate_events_at ON rate_events(kind, at);
