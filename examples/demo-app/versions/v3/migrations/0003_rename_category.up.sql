-- Not online-safe: renaming a column breaks code that still uses the old name,
-- so this runs under maintenance mode.
ALTER TABLE items RENAME COLUMN category TO kind;
