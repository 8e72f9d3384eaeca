-- facetrail store on PostgreSQL, schema version 6: searches and reviews by the local operator
-- (the OS user of the CLI, no account) have no user_id, and every search and review names its
-- actor (schema_v6.sql).

ALTER TABLE searches ALTER COLUMN user_id DROP NOT NULL, ADD COLUMN actor TEXT;
UPDATE searches s SET actor = u.name FROM users u WHERE u.id = s.user_id;
ALTER TABLE searches ALTER COLUMN actor SET NOT NULL,
    ADD CHECK (length(trim(actor)) > 0);

ALTER TABLE reviews ALTER COLUMN user_id DROP NOT NULL, ADD COLUMN actor TEXT;
UPDATE reviews r SET actor = u.name FROM users u WHERE u.id = r.user_id;
ALTER TABLE reviews ALTER COLUMN actor SET NOT NULL,
    ADD CHECK (length(trim(actor)) > 0);
