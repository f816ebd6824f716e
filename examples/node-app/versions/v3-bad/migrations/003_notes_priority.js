"use strict";
// Online-safe: a nullable column.
exports.onlineSafe = true;

exports.up = (knex) =>
  knex.schema.alterTable("notes", (t) => {
    t.integer("priority");
  });

exports.down = (knex) =>
  knex.schema.alterTable("notes", (t) => {
    t.dropColumn("priority");
  });
