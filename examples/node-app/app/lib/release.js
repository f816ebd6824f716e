"use strict";
// Which release this code is: deployer writes the release id to REVISION, the tag to VERSION.
const fs = require("fs");
const path = require("path");
const { ROOT } = require("./env");

function firstLine(name, fallback = "unknown") {
  try {
    return fs.readFileSync(path.join(ROOT, name), "utf8").split("\n")[0].trim() || fallback;
  } catch (err) {
    return fallback;
  }
}

const REVISION = firstLine("REVISION");
const VERSION = firstLine("VERSION");

module.exports = { REVISION, VERSION, ROOT };
