"use strict";
// The queue worker: marks new notes processed, a few at a time. On SIGTERM it finishes the
// batch it is working on, then exits.
const db = require("./lib/db");
const { REVISION } = require("./lib/release");

let stopping = false;
process.on("SIGTERM", () => { stopping = true; });
process.on("SIGINT", () => { stopping = true; });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function processBatch() {
  const batch = db("notes").select("id").whereNull("processed_at").orderBy("id").limit(10);
  return db("notes").whereIn("id", batch).update({ processed_at: db.fn.now() });
}

async function main() {
  console.log(`worker: release ${REVISION} started`);
  while (!stopping) {
    try {
      const n = await processBatch();
      if (n) console.log(`worker: processed ${n} note(s)`);
    } catch (err) {
      console.error(`worker: ${err.message}`);
    }
    await sleep(200);
  }
  await db.destroy();
  console.log("worker: stopped");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
