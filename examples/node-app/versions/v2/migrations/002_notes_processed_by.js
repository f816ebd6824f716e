"use strict";
// Online-safe (no maintenance mode): a column with a constant default, which PostgreSQL adds
// without rewriting the table; the v1 code still running meanwhile never names it.
exports.onlineSafe = true;

exports.up = (knex) =>
  knex.schema.alterTable("notes", (t) => {
    t.string("processed_by", 64).notNullable().defaultTo("");
  });

exports.down = (knex) =>
  knex.schema.alterTable("notes", (t) => {
    t.dropColumn("processed_by");
  });
