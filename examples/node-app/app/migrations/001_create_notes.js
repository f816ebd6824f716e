"use strict";
// A new table: the first deploy runs it under maintenance mode (no `onlineSafe` export).

exports.up = (knex) =>
  knex.schema.createTable("notes", (t) => {
    t.increments("id");
    t.text("text").notNullable();
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("processed_at", { useTz: true });
  });

exports.down = (knex) => knex.schema.dropTable("notes");
