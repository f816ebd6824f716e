"use strict";
// The web process: an Express app on PORT (from .env, default 3000).
//
//   GET  /health       {"status": "ok", "release": <REVISION>, "schema": <migrations applied>, ...}
//   POST /notes        {"text": "..."} -> 201, the note (the worker processes it)
//   GET  /notes/:id    the note
const os = require("os");
const express = require("express");
const db = require("./lib/db");
const { env } = require("./lib/env");
const maintenance = require("./lib/maintenance");
const { REVISION, VERSION, ROOT } = require("./lib/release");

const app = express();
app.disable("x-powered-by");
app.use(express.json());
app.use(maintenance.middleware);

function noteJson(note) {
  return { id: note.id, text: note.text, processed: note.processed_at !== null };
}

app.get("/health", async (req, res) => {
  const body = { status: "ok", release: REVISION, version: VERSION, host: os.hostname(), dir: ROOT };
  try {
    const row = await db("knex_migrations").count({ n: "*" }).first();
    body.schema = Number(row.n);
  } catch (err) {
    body.status = "fail";
    body.error = `database: ${err.message}`;
  }
  res.status(body.status === "ok" ? 200 : 503).json(body);
});

app.post("/notes", async (req, res, next) => {
  try {
    const text = String((req.body && req.body.text) || "").trim();
    if (!text) return res.status(400).json({ error: "text is required" });
    const [note] = await db("notes").insert({ text }).returning("*");
    res.status(201).json(noteJson(note));
  } catch (err) {
    next(err);
  }
});

app.get("/notes/:id", async (req, res, next) => {
  try {
    const note = await db("notes").where({ id: Number(req.params.id) || 0 }).first();
    if (!note) return res.status(404).json({ error: "no such note" });
    res.json(noteJson(note));
  } catch (err) {
    next(err);
  }
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  console.error(err);
  res.status(500).json({ error: "internal error" });
});

const port = Number(env("PORT", "3000"));
const server = app.listen(port, () => console.log(`web: release ${REVISION} listening on :${port}`));

function shutdown() {
  server.close(() => db.destroy().finally(() => process.exit(0)));
  setTimeout(() => process.exit(0), 8000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
