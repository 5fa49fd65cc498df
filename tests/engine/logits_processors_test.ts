/**
 * User logits processors (engine/logits_processors.ts) in the engine on the CPU backend: host
 * processors against lastLogits with the same change applied in f64, composition in the order
 * given (two orders that must differ), rows grouped per processor giving each request what it
 * gets alone, engine-wide processors recorded into decode graphs against the built-in
 * bannedTokenIds (an independent mechanism); and kernel processors on the fake driver: the
 * launch's grid and packed arguments, signature checks, and capture.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../backends/cpu.ts";
import { openCuda } from "../../backends/cuda.ts";
import { CONFIG_PRESETS } from "../../models/config.ts";
import { Engine, type EngineOptions, type GenerationChunk } from "../../engine/engine.ts";
import {
  hostLogitsProcessor,
  kernelLogitsProcessor,
  type LogitsProcessor,
  type LogitsRows,
} from "../../engine/logits_processors.ts";
import type { Sequence } from "../../engine/sequence.ts";
import { compileKernels } from "../../kernels/compile.ts";
import { buildFakeDriver, buildFakeRtc, openFakeControl } from "../fake_driver/fake.ts";
import { GraphCpuBackend } from "../support/graph_cpu_backend.ts";

const CONFIG = { ...CONFIG_PRESETS.tiny, maxPositionEmbeddings: 512 };
const GREEDY = { temperature: 0, ignoreEos: true };
const OPTIONS: EngineOptions = {
  kvBlocks: 96,
  blockSize: 4,
  maxRunning: 8,
  maxBatchedTokens: 32,
  maxModelLen: 256,
  log: () => {},
};

function load(options: EngineOptions = {}): Promise<Engine> {
  return Engine.load({ config: CONFIG, randomWeights: true, seed: 5 }, {
    backend: new CpuBackend(),
    ...OPTIONS,
    ...options,
  });
}

async function ids(stream: AsyncIterable<GenerationChunk>): Promise<number[]> {
  const out: number[] = [];
  for await (const chunk of stream) if (chunk.tokenId >= 0) out.push(chunk.tokenId);
  return out;
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

const prompt = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (seed * 31 + i * 17) % 200);

Deno.test("host processors: each greedy token is the argmax of the processed row", async () => {
  const engine = await load();
  try {
    const p = prompt(9, 1);
    const plain = await ids(engine.generate(p, { ...GREEDY, maxTokens: 6 }));
    const banned = new Set(plain.slice(0, 3));
    const seen: (number | undefined)[] = [];
    const ban = hostLogitsProcessor("ban", (logits, seq) => {
      seen.push(seq?.numOutputTokens);
      for (const t of banned) logits[t] = -Infinity;
    });
    const run = await ids(engine.generate(p, { ...GREEDY, maxTokens: 6, logitsProcessors: [ban] }));
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5]);
    for (let i = 0; i < run.length; i++) {
      const row = await engine.lastLogits([...p, ...run.slice(0, i)]);
      for (const t of banned) row[t] = -Infinity;
      assert.equal(run[i], argmax(row), `step ${i}`);
    }
    assert.notDeepEqual(run, plain);
  } finally {
    await engine.close();
  }
});

Deno.test("processors compose in the order given; grouped rows get what they get alone", async () => {
  const engine = await load();
  try {
    const p = prompt(7, 2);
    const first = (await ids(engine.generate(p, { ...GREEDY, maxTokens: 1 })))[0];
    const other = (first + 1) % CONFIG.vocabSize;
    // Lift `other` above every logit, or negate `other`: lift-then-negate buries it, while
    // negate-then-lift keeps it on top.
    const lift = hostLogitsProcessor("lift", (logits) => {
      logits[other] = 1000;
    });
    const negate = hostLogitsProcessor("negate", (logits) => {
      logits[other] = -logits[other];
    });
    const params = (order: LogitsProcessor[]) => ({
      ...GREEDY,
      maxTokens: 3,
      logitsProcessors: order,
    });
    const alone = [
      await ids(engine.generate(p, params([lift, negate]))),
      await ids(engine.generate(p, params([negate, lift]))),
      await ids(engine.generate(p, params([lift]))),
    ];
    assert.notEqual(alone[0][0], other);
    assert.equal(alone[1][0], other);
    assert.deepEqual(alone[2], [other, other, other]);
    // Together in one batch (and beside a request without processors), each gets the same.
    const together = await Promise.all([
      ids(engine.generate(p, params([lift, negate]))),
      ids(engine.generate(p, params([negate, lift]))),
      ids(engine.generate(p, params([lift]))),
      ids(engine.generate(p, { ...GREEDY, maxTokens: 3 })),
    ]);
    assert.deepEqual(together.slice(0, 3), alone);
    assert.equal(together[3][0], first);
  } finally {
    await engine.close();
  }
});

/** A capturable stand-in for a kernel processor on the CPU: recorded by GraphCpuBackend. */
function recordedBan(backend: GraphCpuBackend, banned: readonly number[]): LogitsProcessor {
  return {
    name: "recorded_ban",
    capturable: true,
    process(rows: LogitsRows) {
      const { logits, vocab, count, offset } = rows;
      const ids = rows.rowIds.slice(offset, offset + count);
      const run = () => {
        const x = new Float32Array(
          logits.host!.buffer,
          logits.host!.byteOffset,
          logits.host!.byteLength / 4,
        );
        for (const r of ids) for (const t of banned) x[r * vocab + t] = -Infinity;
      };
      if (backend.recording) backend.recording.push(run);
      else run();
    },
  };
}

Deno.test("engine-wide processors run on every row, recorded into decode graphs", async () => {
  const p = [prompt(5, 3), prompt(12, 4), prompt(30, 5)];
  const reference = await load({ graphs: false });
  let plain: number[][], banned: number[];
  let expected: number[][];
  try {
    plain = await Promise.all(
      p.map((q) => ids(reference.generate(q, { ...GREEDY, maxTokens: 12 }))),
    );
    banned = [...new Set(plain.flatMap((run) => run.slice(0, 2)))];
    expected = await Promise.all(
      p.map((q) =>
        ids(reference.generate(q, { ...GREEDY, maxTokens: 12, bannedTokenIds: banned }))
      ),
    );
  } finally {
    await reference.close();
  }
  const backend = new GraphCpuBackend();
  const engine = await load({
    backend,
    ops: backend.ops(),
    logitsProcessors: [recordedBan(backend, banned)],
  });
  try {
    const runs = await Promise.all(
      p.map((q) => ids(engine.generate(q, { ...GREEDY, maxTokens: 12 }))),
    );
    assert.deepEqual(runs, expected);
    assert.ok(engine.stats().graphReplays > 5, `replayed ${engine.stats().graphReplays}`);
    assert.notDeepEqual(runs, plain);
  } finally {
    await engine.close();
    backend.close();
  }
  await assert.rejects(
    () => load({ logitsProcessors: [hostLogitsProcessor("h", () => {})] }),
    /h runs on the host, and engine-wide processors are recorded into decode graphs/,
  );
  await assert.rejects(
    () => load({ logitsProcessors: [{ name: "x" } as never] }),
    /make processors with kernelLogitsProcessor or hostLogitsProcessor/,
  );
});

const BAN_SOURCE = `
extern "C" __global__ void ban_set(float* logits, const int32_t* rows, int32_t count,
                                   int32_t vocab, const int32_t* banned, int32_t n) {
  float* row = logits + (size_t)rows[blockIdx.y] * vocab;
  for (int i = threadIdx.x; i < n; i += blockDim.x) row[banned[i]] = -INFINITY;
}
extern "C" __global__ void wrong(float* logits, int32_t count) {}
`;

Deno.test("kernel processors launch (blocksPerRow, count) over the group's rows, captured too", async () => {
  const driver = buildFakeDriver();
  const fake = openFakeControl(driver);
  fake.reset();
  const rtc = buildFakeRtc();
  const gpu = openCuda({ libraryPath: driver });
  const cacheDir = Deno.makeTempDirSync();
  try {
    const compiler = (await import("../../backends/rtc.ts")).openRuntimeCompiler("cuda", {
      libraryPath: rtc.path,
    });
    const mod = await compileKernels(gpu, BAN_SOURCE, { name: "ban", cacheDir, compiler });
    const banned = gpu.alloc(64), logits = gpu.alloc(4 * 8 * 1000), rowIds = gpu.alloc(64);
    const stream = gpu.createStream();
    const processor = kernelLogitsProcessor(mod, "ban_set", {
      args: [banned, 16],
      block: 128,
      blocksPerRow: 1,
    });
    const rows: LogitsRows = {
      backend: gpu,
      stream,
      logits,
      vocab: 1000,
      count: 3,
      offset: 5,
      rowIds: new Int32Array(16),
      rowIdsDevice: rowIds,
      hostRows: (count: number) => new Float32Array(count * 1000),
      sequence: (): Sequence | null => null,
    };
    processor.process(rows);
    const launch = fake.lastLaunch();
    assert.equal(launch.functionName, "ban_set");
    assert.deepEqual([launch.grid, launch.block], [[1, 3, 1], [128, 1, 1]]);
    const v = new DataView(launch.args.buffer, launch.args.byteOffset);
    assert.equal(v.getBigUint64(0, true), BigInt(logits.ptr));
    assert.equal(v.getBigUint64(8, true), BigInt(rowIds.ptr + 20)); // offset 5 rows of i32
    assert.deepEqual([v.getInt32(16, true), v.getInt32(20, true)], [3, 1000]);
    assert.equal(v.getBigUint64(24, true), BigInt(banned.ptr));
    assert.equal(v.getInt32(32, true), 16);
    // Default launch shape: one thread per token, ceil(vocab / 256) blocks per row.
    kernelLogitsProcessor(mod, "ban_set", { args: [banned, 16] }).process(rows);
    assert.deepEqual(fake.lastLaunch().grid, [4, 3, 1]);
    gpu.beginCapture(stream);
    processor.process(rows);
    gpu.endCapture(stream).destroy();
    assert.equal(fake.lastCapturedLaunch().functionName, "ban_set");

    assert.throws(
      () => kernelLogitsProcessor(mod, "wrong"),
      /wrong takes \(ptr logits, i32 count\); a logits processor kernel starts \(float\* logits/,
    );
    assert.throws(
      () => kernelLogitsProcessor(mod, "ban_set"),
      /takes 2 argument\(s\) after the row parameters/,
    );
    assert.throws(
      () => kernelLogitsProcessor(mod, "nope"),
      /no kernel 'nope' in the module \(has ban_set, wrong\)/,
    );
    stream.destroy();
    for (const b of [banned, logits, rowIds]) gpu.free(b);
    mod.module.unload();
    compiler.close();
  } finally {
    gpu.close();
    fake.close();
    rtc.control.close();
    Deno.removeSync(cacheDir, { recursive: true });
  }
});
