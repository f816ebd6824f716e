"use strict";
// Settings: KEY=VALUE lines of the release's .env (deployer links it to shared/.env); the
// process environment wins.
const fs = require("fs");
const path = require("path");

const ROOT = path.resolve(__dirname, "..");

function readEnvFile(file) {
  const values = {};
  let text = "";
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    return values;
  }
  for (let line of text.split("\n")) {
    line = line.trim();
    if (!line || line.startsWith("#") || !line.includes("=")) continue;
    const at = line.indexOf("=");
    const key = line.slice(0, at).replace(/^export\s+/, "").trim();
    let value = line.slice(at + 1).trim();
    if (value.length >= 2 && value[0] === value[value.length - 1] && (value[0] === '"' || value[0] === "'")) {
      value = value.slice(1, -1);
    }
    values[key] = value;
  }
  return values;
}

const fileValues = readEnvFile(path.join(ROOT, ".env"));

function env(key, fallback = "") {
  if (process.env[key] !== undefined) return process.env[key];
  if (fileValues[key] !== undefined) return fileValues[key];
  return fallback;
}

module.exports = { ROOT, env };
