/**
 * The soak test's own checks can fail: the stream checker rejects each way a stream can be
 * malformed, the targets miss on 5xx, leaks and held KV blocks, and a short soak of the tiny
 * model passes them all.
 *
 * @module
 */

import assert from "node:assert/strict";
import { checkStream, soak, type SoakResult, soakTargets } from "../bench/soak.ts";
import { Engine } from "../engine/engine.ts";
import { TINY_MODEL_DIR } from "./support/server.ts";

const event = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;
const DONE = "data: [DONE]\n\n";
const chunk = (text: string, finish: string | null = null, id = "cmpl-1") =>
  event({ id, object: "text_completion", choices: [{ index: 0, text, finish_reason: finish }] });
const usage = (p: number, c: number) =>
  event({
    id: "cmpl-1",
    choices: [],
    usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c },
  });

Deno.test("soak: a well-formed stream passes the checker", () => {
  assert.equal(
    checkStream(chunk("a") + chunk("b", "length") + usage(3, 2) + DONE, "completion"),
    null,
  );
  const role = event({
    id: "c",
    choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }],
  });
  const end = event({
    id: "c",
    choices: [{ index: 0, delta: { content: "x" }, finish_reason: "stop" }],
  });
  assert.equal(checkStream(role + end + DONE, "chat"), null);
});

Deno.test("soak: each malformed stream is caught, naming the problem", () => {
  const cases: [string, RegExp][] = [
    [chunk("a", "stop"), /data: \[DONE\]/],
    [chunk("a") + DONE, /no chunk carries a finish_reason/],
    [chunk("a", "stop") + chunk("b") + DONE, /follows the finish/],
    [chunk("a") + chunk("b", "stop", "cmpl-2") + DONE, /has id cmpl-2/],
    ["data: {oops\n\n" + DONE, /not JSON/],
    [chunk("a") + event({ error: { message: "boom" } }) + DONE, /is an error/],
    [usage(1, 1) + chunk("a", "stop") + DONE, /before the finish/],
    [
      chunk("a", "stop") +
      event({
        id: "cmpl-1",
        choices: [],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 5 },
      }) + DONE,
      /usage is inconsistent/,
    ],
    [chunk("a", "stop") + DONE.trimEnd(), /blank line/],
    [chunk("a", "bogus") + DONE, /finish_reason bogus/],
  ];
  for (const [body, problem] of cases) {
    assert.match(checkStream(body, "completion") ?? "passed", problem);
  }
  const noRole = event({
    id: "c",
    choices: [{ index: 0, delta: { content: "x" }, finish_reason: "stop" }],
  });
  assert.match(checkStream(noRole + DONE, "chat")!, /role/);
});

Deno.test("soak: targets miss on a 5xx, a leak, a held block or a malformed stream", () => {
  const clean: SoakResult = {
    seconds: 10,
    sent: { stream: 1, chat_stream: 1, abort: 1, stop: 1, logprobs: 1, chat: 1, bad: 1 },
    statuses: { 200: 6, 400: 1 },
    serverErrors: 0,
    failures: [],
    malformed: [],
    kvBlocksAfter: 0,
    rssMiB: { start: 100, end: 120 },
    deviceMiB: { start: 1000, end: 1000 },
  };
  assert.ok(soakTargets(clean).every((l) => l.endsWith(" met")), soakTargets(clean).join("\n"));
  const missed = (change: Partial<SoakResult>) =>
    soakTargets({ ...clean, ...change }).filter((l) => l.endsWith("MISSED")).map((l) =>
      l.split(" ")[1]
    );
  assert.deepEqual(missed({ serverErrors: 1 }), ["soak_5xx"]);
  assert.deepEqual(missed({ failures: ["x"] }), ["soak_failed_requests"]);
  assert.deepEqual(missed({ malformed: ["x"] }), ["soak_malformed_streams"]);
  assert.deepEqual(missed({ kvBlocksAfter: 2 }), ["soak_kv_blocks_after"]);
  assert.deepEqual(missed({ rssMiB: { start: 100, end: 200 } }), ["soak_rss_growth_mib"]);
  assert.deepEqual(missed({ deviceMiB: { start: 1000, end: 1100 } }), [
    "soak_device_mem_growth_mib",
  ]);
});

Deno.test({
  name: "soak: eight seconds of mixed traffic on the tiny model pass every check",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const engine = await Engine.load(TINY_MODEL_DIR, {
      backend: "cpu",
      maxModelLen: 1024,
      log: () => {},
    });
    try {
      const result = await soak(engine, null, {
        seconds: 8,
        warmupSeconds: 2,
        concurrency: 4,
        seed: 7,
        maxTokens: 16,
      });
      const sent = Object.values(result.sent).reduce((a, b) => a + b, 0);
      assert.ok(sent >= 10, `only ${sent} requests in 8 s`);
      assert.deepEqual(result.failures, []);
      assert.deepEqual(result.malformed, []);
      assert.equal(result.serverErrors, 0);
      assert.equal(result.kvBlocksAfter, 0);
      assert.ok((result.statuses[200] ?? 0) > 0);
    } finally {
      await engine.close();
    }
  },
});
