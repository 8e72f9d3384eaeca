-- facetrail store on PostgreSQL, schema version 5: face models by name, the active one, and
-- model keys that name the detector (schema_v5.sql).

CREATE TABLE store_settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE user_models (
    name        TEXT PRIMARY KEY CHECK (length(trim(name)) > 0),
    spec        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);

UPDATE models SET key = 'dlib-hog@frontal-v1+' || key,
                  info = jsonb_set(info::jsonb, '{detector}', '"dlib-hog@frontal-v1"')::text
 WHERE strpos(key, '+') = 0;

INSERT INTO store_settings (key, value) SELECT 'active_model', 'dlib' WHERE EXISTS (SELECT 1 FROM models);
