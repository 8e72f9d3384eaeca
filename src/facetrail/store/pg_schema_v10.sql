-- facetrail store on PostgreSQL, schema version 10: boxes of faces that ingest left out
-- because they matched an opt-out (schema_v10.sql says what the table is for).

CREATE TABLE suppressed_faces (
    image_sha256  TEXT NOT NULL,
    box           TEXT NOT NULL,
    PRIMARY KEY (image_sha256, box)
);
