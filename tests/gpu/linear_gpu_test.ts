/**
 * The linear kernels on a real NVIDIA GPU (`deno task test:gpu`) against the CPU reference
 * (ops/cpu/linear.ts), on the same inputs: M ∈ {1, 2, 3, 8, 16, 17, 64, 300} over (N, K) ∈
 * {(4096, 4096), (1000, 1000), (1000, 1001), (1024, 4096), (37, 64)}, plus the 128256×4096
 * GEMV at M = 1. Every shape runs through the automatic choice and through each kernel forced
 * (both GEMV row widths and several K splits, both mma GEMM tiles, the FMA fallback), so every
 * kernel meets the tails: N = 37 and 1000 are no multiple of any tile, K = 64 is less than one
 * GEMV step, K = 1000 (125 chunks of 8) ends in a partial step and a partial 64-wide k tile, and
 * K = 1001 is no multiple of 8 (fallback only). The GEMVs also run with two steps in flight per
 * warp, and launched plainly instead of programmatically. Also: a misaligned x view (fallback),
 * graph capture, the vendor-library choice of prepareLinear where the backend has one, and
 * chains of GEMVs that each read the previous one's output, eagerly and from a graph: on an H100
 * these launch programmatically (each may start before the one before it ends), so a GEMV that
 * read x, or wrote out, before its griddepcontrol.wait would read stale values or clobber its
 * predecessor's input. Outputs are poisoned (0xff bytes: NaN) before each run, so an unwritten
 * element fails.
 *
 * Inputs: x uniform in ±1, W uniform in ±1/sqrt(K), so outputs are O(1).
 *
 * Tolerances. Both sides round one sum per output to bf16 (8 significant bits); the GPU sums in
 * fp32 in its own order, the CPU in double. Where the two sums straddle a rounding boundary the
 * results are one bf16 ulp apart, at most 2^-7·|ref|; the fp32 summation error itself is below
 * K·2^-24·max|x·w| ≈ 1e-5 here, so per element |gpu − cpu| ≤ 2^-7·|ref| + 1e-4. Norm-wise
 * relative error ≤ 1e-2, the family-wide bf16 bound.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { decodeBf16, toBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuLinearOps } from "../../ops/cpu/linear.ts";
import { openCuda } from "../../backends/cuda.ts";
import { type GpuLinearOps, type LinearOptions, loadLinearOps } from "../../ops/gpu/linear.ts";
import { assertClose, rng } from "../support/numeric.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");

const MS = [1, 2, 3, 8, 16, 17, 64, 300];
// 1000 is a multiple of 8 (vector path, with N and K tails); K = 1001 takes the fallback.
const SHAPES: [number, number][] = [
  [4096, 4096],
  [1000, 1000],
  [1000, 1001],
  [1024, 4096],
  [37, 64],
];

/** Every forced kernel configuration, after the automatic one. */
const VARIANTS: LinearOptions[] = [
  {},
  { kernel: "gemv16" },
  { kernel: "gemv8" },
  { kernel: "gemv16", gemvSplit: 1 },
  { kernel: "gemv8", gemvSplit: 2 },
  { kernel: "gemv16", gemvSplit: 4 },
  { kernel: "gemm128" },
  { kernel: "gemm64" },
  { kernel: "fma" },
  { kernel: "gemm128x256" },
  { programmatic: false },
  { kernel: "gemv16", gemvStages: 2 },
  { kernel: "gemv16", gemvStages: 1 },
  { kernel: "gemv8", gemvStages: 2, gemvSplit: 1 },
];

function describe(options: LinearOptions): string {
  return `${options.kernel ?? "auto"}${options.gemvSplit ? ` split ${options.gemvSplit}` : ""}${
    options.gemvStages ? ` stages ${options.gemvStages}` : ""
  }${options.programmatic === false ? " plain launch" : ""}`;
}

/** Fills `bits` with bf16 patterns of seeded uniform values in ±scale. */
function fillRandom(bits: Uint16Array, seed: number, scale: number): void {
  const next = rng(seed);
  for (let i = 0; i < bits.length; i++) bits[i] = toBf16Bits(next(-scale, scale));
}

function bf16Of(buffer: DeviceBuffer): Uint16Array {
  return new Uint16Array(buffer.host!.buffer, buffer.host!.byteOffset, buffer.bytes / 2);
}

/** Norm-wise and per-element comparison (see the module comment for the bounds). */
function assertLinearClose(got: Float32Array, ref: Float32Array, what: string): void {
  assertClose(got, ref, 1e-2, what);
  for (let i = 0; i < ref.length; i++) {
    const bound = 2 ** -7 * Math.abs(ref[i]) + 1e-4;
    if (!(Math.abs(got[i] - ref[i]) <= bound)) {
      assert.fail(`${what}: element ${i} is ${got[i]}, the CPU says ${ref[i]}`);
    }
  }
}

/** One weight shape on both devices, with x for the largest M and room for the largest out. */
class Case {
  readonly cpu = new CpuBackend();
  readonly cpuOps = cpuLinearOps();
  readonly cx: DeviceBuffer;
  readonly cw: DeviceBuffer;
  readonly cout: DeviceBuffer;
  readonly gx: DeviceBuffer;
  readonly gw: DeviceBuffer;
  readonly gout: DeviceBuffer;

  constructor(
    readonly gpu: Backend,
    readonly stream: Stream,
    readonly n: number,
    readonly k: number,
    maxM: number,
  ) {
    this.cx = this.cpu.alloc(2 * maxM * k);
    this.cw = this.cpu.alloc(2 * n * k);
    this.cout = this.cpu.alloc(2 * maxM * n);
    fillRandom(bf16Of(this.cx), 1000 + n + k, 1);
    fillRandom(bf16Of(this.cw), 2000 + n + k, 1 / Math.sqrt(k));
    this.gx = gpu.alloc(this.cx.bytes);
    this.gw = gpu.alloc(this.cw.bytes);
    this.gout = gpu.alloc(this.cout.bytes);
    gpu.copyToDevice(this.gx, this.cx.host!);
    gpu.copyToDevice(this.gw, this.cw.host!);
  }

  /** The CPU result for the first m rows of x. */
  reference(m: number): Float32Array {
    this.cpuOps.linear(this.cout, this.cx, this.cw, m, this.n, this.k, this.cpu.defaultStream);
    return decodeBf16(bf16Of(this.cout).subarray(0, m * this.n));
  }

  /** Runs `call` on poisoned output and returns the first m·n outputs. */
  gpuResult(m: number, call: (out: DeviceBuffer) => void): Float32Array {
    this.gpu.memset(this.gout, 0xff, this.stream);
    call(this.gout);
    this.stream.synchronize();
    const bits = new Uint16Array(m * this.n);
    this.gpu.copyToHost(bits, this.gout);
    return decodeBf16(bits);
  }

  check(ops: GpuLinearOps, m: number, ref: Float32Array, what: string): void {
    const got = this.gpuResult(m, (out) => {
      ops.linear(out, this.gx, this.gw, m, this.n, this.k, this.stream);
    });
    const kernel = ops.kernelName(m, this.n, this.k, this.gx, this.gw);
    assertLinearClose(got, ref, `${what} (${kernel})`);
  }

  free(): void {
    for (const b of [this.gx, this.gw, this.gout]) this.gpu.free(b);
  }
}

/** Opens the GPU, loads every variant's ops, and closes the GPU after. */
function gpuTest(
  name: string,
  body: (gpu: Backend, ops: GpuLinearOps[], stream: Stream) => void | Promise<void>,
) {
  Deno.test({ name, ignore, sanitizeResources: false }, async () => {
    const gpu = openCuda();
    try {
      const ops = await Promise.all(VARIANTS.map((options) => loadLinearOps(gpu, options)));
      await body(gpu, ops, gpu.createStream());
    } finally {
      gpu.close();
    }
  });
}

for (const [n, k] of SHAPES) {
  gpuTest(`gpu linear: N=${n} K=${k}, M in ${MS.join(", ")}, every kernel`, (gpu, ops, stream) => {
    const c = new Case(gpu, stream, n, k, Math.max(...MS));
    try {
      for (const m of MS) {
        const ref = c.reference(m);
        ops.forEach((o, i) => c.check(o, m, ref, `m=${m} n=${n} k=${k} ${describe(VARIANTS[i])}`));
        const auto = ops[0].kernelName(m, n, k, c.gx, c.gw);
        const expected = k % 8 !== 0
          ? /^fma$/
          : m <= 16
          ? /^gemv/
          : /^(gemm(128|64)|wgmma128x(128|256))$/;
        assert.match(auto, expected, `m=${m} n=${n} k=${k}: auto chose ${auto}`);
      }
    } finally {
      c.free();
    }
  });
}

gpuTest("gpu linear: the 128256×4096 LM head at M = 1", (gpu, ops, stream) => {
  const c = new Case(gpu, stream, 128256, 4096, 1);
  try {
    const ref = c.reference(1);
    for (const i of [0, 1, 2, 3, 7, 8, 10, 11, 12]) {
      c.check(ops[i], 1, ref, `lm head ${describe(VARIANTS[i])}`);
    }
  } finally {
    c.free();
  }
});

gpuTest("gpu linear: M = 4096 takes the widest tiles and is right", (gpu, ops, stream) => {
  const m = 4096, n = 320, k = 64;
  const c = new Case(gpu, stream, n, k, m);
  try {
    // 128×256 mma.sync tiles, or on Hopper the 128×128 wgmma ones (3 columns of 128 fill more
    // SMs than 2 of 256).
    assert.match(ops[0].kernelName(m, n, k, c.gx, c.gw), /^(gemm128x256|wgmma128x128)$/);
    c.check(ops[0], m, c.reference(m), `m=${m} n=${n} k=${k} auto`);
  } finally {
    c.free();
  }
});

gpuTest("gpu linear: a misaligned x view takes the fallback and is right", (gpu, ops, stream) => {
  const n = 1024, k = 4096;
  const c = new Case(gpu, stream, n, k, 64);
  const shifted = gpu.alloc(2 * 64 * k + 16);
  try {
    const view = shifted.slice(2, 2 * 64 * k);
    gpu.copyDevice(view, c.gx, stream);
    for (const m of [1, 16, 64]) {
      const ref = c.reference(m);
      assert.equal(ops[0].kernelName(m, n, k, view, c.gw), "fma");
      const got = c.gpuResult(m, (out) => ops[0].linear(out, view, c.gw, m, n, k, stream));
      assertLinearClose(got, ref, `misaligned x, m=${m}`);
    }
  } finally {
    gpu.free(shifted);
    c.free();
  }
});

gpuTest("gpu linear: calls record into a graph and replay", (gpu, ops, stream) => {
  const n = 1024, k = 4096;
  const c = new Case(gpu, stream, n, k, 64);
  try {
    for (const m of [1, 64]) {
      const ref = c.reference(m);
      gpu.beginCapture(stream);
      ops[0].linear(c.gout, c.gx, c.gw, m, n, k, stream);
      const graph = gpu.endCapture(stream);
      const got = c.gpuResult(m, () => graph.launch(stream));
      graph.destroy();
      assertLinearClose(got, ref, `graph replay, m=${m}`);
    }
  } finally {
    c.free();
  }
});

gpuTest("gpu linear: prepareLinear picks per shape and stays right", (gpu, ops, stream) => {
  const n = 4096, k = 4096;
  const c = new Case(gpu, stream, n, k, 300);
  try {
    const shapes = [1, 16, 64, 300].map((m) => ({ m, n, k }));
    ops[0].prepareLinear(shapes, stream);
    ops[0].prepareLinear(shapes, stream); // known shapes are not timed again
    const names = shapes.map(({ m }) => ops[0].kernelName(m, n, k, c.gx, c.gw));
    console.log(
      `accelerator: ${gpu.gemmAccelerator?.name ?? "none"}; chosen: ${
        shapes.map(({ m }, i) => `m=${m} ${names[i]}`).join(", ")
      }`,
    );
    if (gpu.gemmAccelerator === null) assert.ok(!names.includes("accelerator"));
    for (const { m } of shapes) c.check(ops[0], m, c.reference(m), `prepared m=${m}`);
  } finally {
    c.free();
  }
});

gpuTest("gpu linear: bad sizes throw RangeError before any launch", (gpu, ops, stream) => {
  const x = gpu.alloc(2 * 4 * 8), w = gpu.alloc(2 * 6 * 8), out = gpu.alloc(2 * 4 * 6);
  try {
    assert.throws(() => ops[0].linear(out, x, w, 0, 6, 8, stream), /^RangeError: linear: m = 0/);
    assert.throws(() => ops[0].linear(out, x, w, 5, 6, 8, stream), /linear: x holds 64 bytes/);
    assert.throws(() => ops[0].linear(out, x, w, 4, 7, 8, stream), /linear: weight holds/);
    assert.throws(
      () => ops[0].prepareLinear([{ m: 1, n: -1, k: 8 }], stream),
      /prepareLinear: n = -1/,
    );
  } finally {
    for (const b of [x, w, out]) gpu.free(b);
  }
});

// ---------------------------------------------------------------------------------------------
// Chains of GEMVs: out of call i is x of call i + 1 (square 4096×4096 weights).

const CHAIN = 8;

/**
 * Weights uniform in ±sqrt(3 / K) (variance 1 / K), so every link keeps x's scale: the chain's
 * outputs stay O(1), where the per-element bound of assertLinearClose applies as above.
 */
function chainWeights(n: number, k: number): Uint16Array {
  const bits = new Uint16Array(n * k);
  fillRandom(bits, 77, Math.sqrt(3 / k));
  return bits;
}

/** The GEMV configurations the chains run, each programmatically and plainly. */
const CHAIN_VARIANTS: LinearOptions[] = [
  {},
  { gemvStages: 2 },
  { kernel: "gemv8" },
  { kernel: "gemv8", gemvStages: 2 },
];

/** Bit-for-bit equality of two bf16 outputs, reporting the first difference (not a huge diff). */
function assertSameBits(got: Uint16Array, want: Uint16Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let first = -1, count = 0;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  if (count > 0) {
    assert.fail(
      `${what}: ${count} of ${want.length} outputs differ; the first, [${first}], is 0x${
        got[first].toString(16)
      }, expected 0x${want[first].toString(16)}`,
    );
  }
}

/** What the chain tests share: the weights, x, and room for every link's output. */
class Chain {
  readonly n = 4096;
  readonly k = 4096;
  readonly maxM = 16;
  readonly cpu = new CpuBackend();
  readonly cpuOps = cpuLinearOps();
  readonly cw: DeviceBuffer;
  readonly cx: DeviceBuffer;
  readonly cout: DeviceBuffer;
  readonly gw: DeviceBuffer;
  readonly gx: DeviceBuffer;
  readonly gys: DeviceBuffer;

  constructor(readonly gpu: Backend, readonly stream: Stream) {
    const { n, k, maxM } = this;
    this.cw = this.cpu.alloc(2 * n * k);
    bf16Of(this.cw).set(chainWeights(n, k));
    this.cx = this.cpu.alloc(2 * maxM * k);
    this.cout = this.cpu.alloc(2 * maxM * n);
    this.gw = gpu.alloc(2 * n * k);
    this.gx = gpu.alloc(2 * maxM * k);
    this.gys = gpu.alloc(2 * CHAIN * maxM * n);
    gpu.copyToDevice(this.gw, this.cw.host!);
    const x0 = new Uint16Array(maxM * k);
    fillRandom(x0, 78, 1);
    gpu.copyToDevice(this.gx, x0);
  }

  /** Link i's output for m rows: a 16-byte-aligned slice of gys. */
  y(i: number, m: number): DeviceBuffer {
    return this.gys.slice(2 * i * m * this.n, 2 * m * this.n);
  }

  /** Enqueues the poison and the chain x → y0 → y1 → ... on the stream. */
  enqueue(ops: GpuLinearOps, m: number): void {
    this.gpu.memset(this.gys, 0xff, this.stream);
    let input = this.gx;
    for (let i = 0; i < CHAIN; i++) {
      ops.linear(this.y(i, m), input, this.gw, m, this.n, this.k, this.stream);
      input = this.y(i, m);
    }
  }

  /** Every link's output after the stream has run, as bf16 bits. */
  read(m: number): Uint16Array {
    this.stream.synchronize();
    const bits = new Uint16Array(CHAIN * m * this.n);
    this.gpu.copyToHost(bits, this.gys);
    return bits;
  }

  /** The chain run eagerly. */
  run(ops: GpuLinearOps, m: number): Uint16Array {
    this.enqueue(ops, m);
    return this.read(m);
  }

  /** Link i against the CPU, on the GPU's own output of link i - 1 as its x. */
  checkLinks(bits: Uint16Array, m: number, what: string): void {
    const { n, k } = this;
    const x0 = new Uint16Array(m * k);
    this.gpu.copyToHost(x0, this.gx.slice(0, 2 * m * k));
    for (let i = 0; i < CHAIN; i++) {
      bf16Of(this.cx).set(i === 0 ? x0 : bits.subarray((i - 1) * m * n, i * m * n));
      this.cpuOps.linear(this.cout, this.cx, this.cw, m, n, k, this.cpu.defaultStream);
      const ref = decodeBf16(bf16Of(this.cout).subarray(0, m * n));
      const got = decodeBf16(bits.subarray(i * m * n, (i + 1) * m * n));
      assertLinearClose(got, ref, `${what}, link ${i}`);
    }
  }

  free(): void {
    for (const b of [this.gw, this.gx, this.gys]) this.gpu.free(b);
  }
}

/** Opens the GPU and a chain, loads each chain variant launched both ways, and cleans up. */
function chainTest(
  name: string,
  body: (chain: Chain, pdl: GpuLinearOps[], plain: GpuLinearOps[]) => void,
) {
  Deno.test({ name, ignore, sanitizeResources: false }, async () => {
    const gpu = openCuda();
    try {
      const pdl = await Promise.all(CHAIN_VARIANTS.map((o) => loadLinearOps(gpu, o)));
      const plain = await Promise.all(
        CHAIN_VARIANTS.map((o) => loadLinearOps(gpu, { ...o, programmatic: false })),
      );
      const chain = new Chain(gpu, gpu.createStream());
      try {
        // Where the device and driver allow it, the chains must really launch programmatically.
        const { computeCapability: [major], driverVersion } = gpu.info;
        const expected = major >= 9 && driverVersion >= 12030;
        for (const ops of pdl) {
          const launch = ops.gemvLaunch(1, chain.n, chain.k, chain.gx, chain.gw)!;
          assert.equal(
            launch.programmatic,
            expected,
            `programmatic launch, driver ${driverVersion}`,
          );
        }
        for (const ops of plain) {
          assert.equal(
            ops.gemvLaunch(1, chain.n, chain.k, chain.gx, chain.gw)!.programmatic,
            false,
          );
        }
        body(chain, pdl, plain);
      } finally {
        chain.free();
      }
    } finally {
      gpu.close();
    }
  });
}

chainTest(
  "gpu linear: a chain of GEMVs, each reading the one before, matches the CPU link by link",
  (chain, pdl, plain) => {
    for (const m of [1, 5, 16]) {
      CHAIN_VARIANTS.forEach((options, v) => {
        const what = `chain m=${m} ${describe(options)}`;
        const got = chain.run(pdl[v], m);
        chain.checkLinks(got, m, what);
        // Same kernels, same inputs, same summation order: bit for bit what the plain launches
        // (which cannot overlap) give.
        assertSameBits(got, chain.run(plain[v], m), `${what}: programmatic = plain`);
      });
    }
  },
);

chainTest(
  "gpu linear: a chain of GEMVs ping-ponging between two buffers, eagerly and from a graph",
  (chain, pdl) => {
    const { gpu, stream, n, k } = chain;
    for (const m of [1, 16]) {
      // x → A → B → A ...: link i + 1 overwrites the buffer link i reads, so a GEMV that wrote
      // out before waiting would corrupt its predecessor's input.
      const a = gpu.alloc(2 * m * n), b = gpu.alloc(2 * m * n);
      try {
        CHAIN_VARIANTS.forEach((options, v) => {
          const what = `ping-pong m=${m} ${describe(options)}`;
          const expected = chain.run(pdl[v], m).subarray((CHAIN - 1) * m * n);
          const enqueue = () => {
            gpu.copyDevice(a, chain.gx, stream);
            gpu.memset(b, 0xff, stream);
            for (let i = 0; i < CHAIN; i++) {
              const [src, dst] = i % 2 === 0 ? [a, b] : [b, a];
              pdl[v].linear(dst, src, chain.gw, m, n, k, stream);
            }
          };
          const last = () => {
            stream.synchronize();
            const bits = new Uint16Array(m * n);
            gpu.copyToHost(bits, CHAIN % 2 === 0 ? a : b);
            return bits;
          };
          enqueue();
          assertSameBits(last(), expected, `${what}: eager`);
          gpu.beginCapture(stream);
          enqueue();
          const graph = gpu.endCapture(stream);
          try {
            for (let replay = 0; replay < 2; replay++) {
              gpu.memset(a, 0xff, stream);
              graph.launch(stream);
              assertSameBits(last(), expected, `${what}: graph replay ${replay}`);
            }
          } finally {
            graph.destroy();
          }
        });
      } finally {
        gpu.free(a);
        gpu.free(b);
      }
    }
  },
);

chainTest("gpu linear: a captured chain of GEMVs replays every link right", (chain, pdl) => {
  for (const m of [1, 16]) {
    CHAIN_VARIANTS.forEach((options, v) => {
      const what = `graph chain m=${m} ${describe(options)}`;
      const eager = chain.run(pdl[v], m);
      chain.gpu.beginCapture(chain.stream);
      chain.enqueue(pdl[v], m); // the poisoning memset is captured too
      const graph = chain.gpu.endCapture(chain.stream);
      try {
        for (let replay = 0; replay < 3; replay++) {
          graph.launch(chain.stream);
          assertSameBits(chain.read(m), eager, `${what}: replay ${replay}`);
        }
      } finally {
        graph.destroy();
      }
    });
  }
});
