-- facetrail store, schema version 10: where an image holds a face that ingest left out
-- because it matched an opt-out. The face is not stored (no embedding, no crop); its box is
-- kept so that the image is shown with it painted over, as an erased face's is, and so that
-- a later analysis of the image (another face model) leaves it out too.

CREATE TABLE suppressed_faces (
    image_sha256  TEXT NOT NULL,
    box           TEXT NOT NULL,   -- JSON [x, y, w, h], in upright pixels
    PRIMARY KEY (image_sha256, box)
);
