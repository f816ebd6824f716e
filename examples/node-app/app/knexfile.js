"use strict";
// knex's configuration, used by the app and by the knex CLI (`knex migrate:latest`).
const path = require("path");
const { env } = require("./lib/env");

module.exports = {
  client: "pg",
  connection: env("DATABASE_URL"),
  pool: { min: 0, max: Number(env("DB_POOL_MAX", "5")) },
  migrations: {
    directory: path.join(__dirname, "migrations"),
    tableName: "knex_migrations",
  },
};
