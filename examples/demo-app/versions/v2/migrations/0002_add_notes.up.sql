-- online-safe
-- Expand only: a new table and a new nullable column; v1 code keeps working.
CREATE TABLE notes (
    id serial PRIMARY KEY,
    body text
);

ALTER TABLE items ADD COLUMN category text;
