ALTER TABLE items RENAME COLUMN kind TO category;
