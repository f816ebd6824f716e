"use strict";
// Maintenance mode: 503 + Retry-After while var/maintenance.json exists and has not expired.
//
// deployer writes {"message": str, "retry": int, "expires_at": epoch seconds or null} there
// (var/ is a shared directory); the deploy gate's own health checks (header
// X-Deployer-Gate: 1) are let through.
const fs = require("fs");
const path = require("path");
const { ROOT, REVISION } = require("./release");

const FLAG = path.join(ROOT, "var", "maintenance.json");

function maintenanceState() {
  let raw;
  try {
    raw = fs.readFileSync(FLAG, "utf8");
  } catch (err) {
    return null;
  }
  let data = {};
  try {
    data = JSON.parse(raw) || {};
  } catch (err) {
    data = {};
  }
  if (typeof data.expires_at === "number" && data.expires_at * 1000 < Date.now()) return null;
  return { message: String(data.message || "maintenance"), retry: Number(data.retry) || 30 };
}

function middleware(req, res, next) {
  const state = maintenanceState();
  const gate = req.path === "/health" && req.get("X-Deployer-Gate") === "1";
  if (state === null || gate) return next();
  res.set("Retry-After", String(state.retry));
  res.status(503).json({ status: "maintenance", message: state.message, release: REVISION });
}

module.exports = { middleware, maintenanceState };
