-- facetrail store on PostgreSQL, schema version 4: which runtime computed each face's
-- embedding (schema_v4.sql).

ALTER TABLE faces ADD COLUMN runtime TEXT NOT NULL DEFAULT 'dlib';
