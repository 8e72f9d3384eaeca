-- facetrail store, schema version 5: face models by name, the active one, and model keys that
-- name the detector.

-- Settings of this data directory that must not change with the environment.
CREATE TABLE store_settings (
    key    TEXT PRIMARY KEY,            -- 'active_model': the face model searches and ingests use
    value  TEXT NOT NULL
);

-- Face models declared by the user (their own ONNX files); shipped models are not listed.
CREATE TABLE user_models (
    name        TEXT PRIMARY KEY CHECK (length(trim(name)) > 0),
    spec        TEXT NOT NULL,          -- JSON of facetrail.faces.UserModel
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);

-- Keys made before version 5 left the detector out; every such gallery came from dlib's HOG.
UPDATE models SET key = 'dlib-hog@frontal-v1+' || key,
                  info = json_set(info, '$.detector', 'dlib-hog@frontal-v1')
 WHERE instr(key, '+') = 0;

-- A data directory made before version 5 keeps its model: dlib.
INSERT INTO store_settings (key, value) SELECT 'active_model', 'dlib' WHERE EXISTS (SELECT 1 FROM models);
