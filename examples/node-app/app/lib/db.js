"use strict";
// One knex instance per process, configured by knexfile.js.
const knex = require("knex");
const config = require("../knexfile");

const db = knex(config);

module.exports = db;
