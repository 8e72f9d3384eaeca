-- facetrail store, schema version 2: score calibrations, kept next to the model they describe.
-- The latest row of a model is the one in force; older rows stay as its history.

CREATE TABLE calibrations (
    id          INTEGER PRIMARY KEY,
    model_id    INTEGER NOT NULL REFERENCES models(id),
    source      TEXT NOT NULL,               -- where the comparisons came from, in words
    data        TEXT NOT NULL,               -- JSON, schema facetrail.calibration/1
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX calibrations_model ON calibrations(model_id, id);
