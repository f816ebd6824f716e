-- Deliberately broken: creates a table, then fails.  The whole migration must
-- roll back (no broken_leftover table, schema stays at 2).
CREATE TABLE broken_leftover (id serial PRIMARY KEY);
SELECT no_such_column FROM items;
