DROP TABLE IF EXISTS broken_leftover;
