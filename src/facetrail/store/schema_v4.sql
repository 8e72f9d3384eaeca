-- facetrail store, schema version 4: which runtime computed each face's embedding.
-- 'dlib' (dlib's own network code) or 'onnx' (the same network on ONNX Runtime). Both give
-- the same vectors within 1e-4, so they share one model: faces stored before version 4 were
-- all computed by dlib, and nothing needs to be re-ingested.

ALTER TABLE faces ADD COLUMN runtime TEXT NOT NULL DEFAULT 'dlib';
