-- facetrail store, schema version 9: rate limits that every server process counts together
-- (searches and probe uploads per user, failed logins per client address). A limit counted by
-- each process alone would be as many times looser as there are processes.

CREATE TABLE rate_events (
    kind  TEXT NOT NULL,   -- search, probe, login_failure
    key   TEXT NOT NULL,   -- a user name, or a client address
    at    REAL NOT NULL    -- seconds since the epoch
);
CREATE INDEX rate_events_key ON rate_events(kind, key, at);
CREATE INDEX rate_events_at ON rate_events(kind, at);
