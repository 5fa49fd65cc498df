/**
 * The generated launchers, byte for byte, through the fake driver: every parameter type in both
 * packings, every specialisation case, and every argument error.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceModule } from "../backends/backend.ts";
import { openCuda } from "../backends/cuda.ts";
import { openHip } from "../backends/hip.ts";
import { DriverError, LaunchArgumentError } from "../backends/errors.ts";
import type { GpuBackend } from "../backends/gpu_backend.ts";
import {
  type ArgumentPacking,
  createLauncher,
  type LauncherOptions,
  type LoadedVariant,
} from "../kernels/launcher.ts";
import { loadLinearOps } from "../ops/gpu/linear.ts";
import { type KernelSignature, packLayout, PARAM_BYTES } from "../kernels/signature.ts";
import {
  buildFakeDriver,
  type FakeControl,
  type FakeDriverOptions,
  openFakeControl,
} from "./fake_driver/fake.ts";

const ALL_TYPES: KernelSignature = {
  name: "all_types",
  params: [
    { name: "out", type: "ptr" },
    { name: "i", type: "i32" },
    { name: "u", type: "u32" },
    { name: "l", type: "i64" },
    { name: "ul", type: "u64" },
    { name: "x", type: "f32" },
    { name: "h", type: "f16" },
    { name: "bh", type: "bf16" },
  ],
};

/**
 * Runs `body` against a CUDA backend on the fake driver, with one loaded module; `setup` runs on
 * the reset fake before the backend opens (to set what the device reports).
 */
function withFake(
  body: (gpu: GpuBackend, module: DeviceModule, fake: FakeControl) => void,
  options: FakeDriverOptions = {},
  setup: (fake: FakeControl) => void = () => {},
): () => void {
  return () => {
    const path = buildFakeDriver(options);
    const fake = openFakeControl(path);
    fake.reset();
    setup(fake);
    const gpu = openCuda({ libraryPath: path });
    try {
      body(gpu, gpu.loadModule({ format: "ptx", text: "fake module" }), fake);
    } finally {
      gpu.close();
      fake.close();
    }
  };
}

function generic(module: DeviceModule, symbol: string): LoadedVariant[] {
  return [{ fn: module.getFunction(symbol), assumes: {} }];
}

/** The packed bytes a correct launcher must produce, written independently with a DataView. */
function expectedAllTypes(values: {
  out: number;
  i: number;
  u: number;
  l: bigint;
  ul: bigint;
  x: number;
  h: number;
  bh: number;
}): Uint8Array {
  const bytes = new Uint8Array(40);
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(0, BigInt(values.out), true);
  dv.setInt32(8, values.i, true);
  dv.setUint32(12, values.u, true);
  dv.setBigInt64(16, values.l, true);
  dv.setBigUint64(24, values.ul, true);
  dv.setFloat32(32, values.x, true);
  dv.setUint16(36, values.h, true);
  dv.setUint16(38, values.bh, true);
  return bytes;
}

function setSizes(fake: FakeControl, signature: KernelSignature): void {
  fake.setParamSizes(signature.params.map((p) => PARAM_BYTES[p.type]));
}

for (const packing of ["params", "extra"] as ArgumentPacking[]) {
  Deno.test(
    `launcher (${packing}): every parameter type lands at its natural offset, exactly`,
    withFake((gpu, module, fake) => {
      setSizes(fake, ALL_TYPES);
      const { launch } = createLauncher(gpu.launchAbi, ALL_TYPES, generic(module, "all_types"), {
        packing,
      });
      const buffer = gpu.alloc(256);
      const stream = gpu.createStream();
      const cases = [
        // Numbers, including negatives and values past 2^32 that need both 32-bit halves.
        {
          args: [
            buffer.ptr + 16,
            -123456,
            4000000000,
            -(2 ** 40) - 5,
            2 ** 52 + 7,
            1.5,
            0x3c00,
            0x3f80,
          ],
          expect: {
            out: buffer.ptr + 16,
            i: -123456,
            u: 4000000000,
            l: -(2n ** 40n) - 5n,
            ul: 2n ** 52n + 7n,
            x: 1.5,
            h: 0x3c00,
            bh: 0x3f80,
          },
        },
        // BigInts for the 64-bit integers, at the edges numbers cannot reach.
        {
          args: [buffer, -1, 0, -(2n ** 63n), 2n ** 64n - 1n, -0.25, 0xffff, 0],
          expect: {
            out: buffer.ptr,
            i: -1,
            u: 0,
            l: -(2n ** 63n),
            ul: 2n ** 64n - 1n,
            x: -0.25,
            h: 0xffff,
            bh: 0,
          },
        },
      ];
      for (const { args, expect } of cases) {
        launch(3, 2, 1, 128, 2, 1, 4096, stream, ...args);
        const record = fake.lastLaunch();
        assert.deepEqual(record.grid, [3, 2, 1]);
        assert.deepEqual(record.block, [128, 2, 1]);
        assert.equal(record.sharedMem, 4096);
        assert.equal(
          record.stream,
          BigInt(Deno.UnsafePointer.value(stream.native)),
          "the launch must go to the given stream",
        );
        assert.equal(record.functionName, "all_types");
        assert.deepEqual(record.args, expectedAllTypes(expect));
      }
    }),
  );
}

/**
 * A signature whose narrow parameters come before wide ones, so the packing must pad: an i32
 * before a pointer, an f16 before an i64, a bf16 before a pointer.
 */
const PADDED: KernelSignature = {
  name: "padded",
  params: [
    { name: "n", type: "i32" },
    { name: "out", type: "ptr" },
    { name: "h", type: "f16" },
    { name: "l", type: "i64" },
    { name: "bh", type: "bf16" },
    { name: "in", type: "ptr" },
    { name: "tail", type: "u32" },
  ],
};

/**
 * The bytes of PADDED as the C ABI lays out `struct { int32_t n; void* out; uint16_t h; int64_t
 * l; uint16_t bh; void* in; uint32_t tail; }` (x86-64 and AArch64 alike), written by hand:
 * 4 bytes of padding after n, 6 after h, 6 after bh; 52 bytes without the struct's tail padding.
 */
function expectedPadded(n: number, out: number, h: number, l: bigint, bh: number, inp: number) {
  const bytes = new Uint8Array(52);
  const dv = new DataView(bytes.buffer);
  dv.setInt32(0, n, true);
  dv.setBigUint64(8, BigInt(out), true);
  dv.setUint16(16, h, true);
  dv.setBigInt64(24, l, true);
  dv.setUint16(32, bh, true);
  dv.setBigUint64(40, BigInt(inp), true);
  dv.setUint32(48, 0xdeadbeef, true);
  return bytes;
}

Deno.test("packLayout: an i32 before a pointer pads to the pointer's alignment", () => {
  assert.deepEqual(packLayout(PADDED.params), { offsets: [0, 8, 16, 24, 32, 40, 48], size: 52 });
});

for (const packing of ["params", "extra"] as ArgumentPacking[]) {
  Deno.test(
    `launcher (${packing}): narrow arguments before wide ones are padded as the C ABI pads`,
    withFake((gpu, module, fake) => {
      setSizes(fake, PADDED);
      const { launch } = createLauncher(gpu.launchAbi, PADDED, generic(module, "padded"), {
        packing,
      });
      const buffer = gpu.alloc(256);
      const stream = gpu.createStream();
      // Every byte of each value is non-zero, so a value written at a wrong offset shows.
      const l = -0x0102030405060708n;
      launch(
        1,
        1,
        1,
        32,
        1,
        1,
        0,
        stream,
        -2,
        buffer.ptr + 32,
        0x3c01,
        l,
        0x3f81,
        buffer,
        0xdeadbeef,
      );
      const record = fake.lastLaunch();
      assert.equal(record.functionName, "padded");
      assert.deepEqual(
        record.args,
        expectedPadded(-2, buffer.ptr + 32, 0x3c01, l, 0x3f81, buffer.ptr),
      );
    }),
  );
}

Deno.test(
  "launcher: specialised variants are chosen like Triton's (aligned16, ==1, %16)",
  withFake((gpu, module, fake) => {
    const signature: KernelSignature = {
      name: "spec",
      params: [{ name: "p", type: "ptr" }, { name: "n", type: "i32" }, { name: "m", type: "u64" }],
    };
    setSizes(fake, signature);
    const variants: LoadedVariant[] = [
      { fn: module.getFunction("spec"), assumes: {} },
      { fn: module.getFunction("spec_n1"), assumes: { n: "one" } },
      { fn: module.getFunction("spec_n16"), assumes: { n: "div16" } },
      { fn: module.getFunction("spec_p16_n16"), assumes: { p: "aligned16", n: "div16" } },
      { fn: module.getFunction("spec_m1"), assumes: { m: "one" } },
    ];
    const { launch } = createLauncher(gpu.launchAbi, signature, variants);
    const aligned = gpu.alloc(64).ptr;
    const stream = gpu.defaultStream;
    const cases: [number, number, number | bigint, string][] = [
      [aligned, 1, 5, "spec_n1"],
      [aligned, 32, 5, "spec_p16_n16"],
      [aligned + 4, 32, 5, "spec_n16"],
      [aligned, -16, 5, "spec_p16_n16"],
      [aligned, 0, 5, "spec_p16_n16"],
      [aligned, 7, 5, "spec"],
      [aligned + 8, 7, 1, "spec_m1"],
      [aligned + 8, 7, 1n, "spec"], // a bigint never matches a specialisation
    ];
    for (const [p, n, m, chosen] of cases) {
      launch(1, 1, 1, 1, 1, 1, 0, stream, p, n, m);
      assert.equal(fake.lastLaunch().functionName, chosen, `p%16=${p % 16} n=${n} m=${m}`);
    }
  }),
);

Deno.test(
  "launcher: arguments no variant accepts, or a variant that assumes the impossible, fail clearly",
  withFake((gpu, module) => {
    const signature: KernelSignature = { name: "only_one", params: [{ name: "n", type: "u32" }] };
    const { launch } = createLauncher(gpu.launchAbi, signature, [
      { fn: module.getFunction("only_one_n1"), assumes: { n: "one" } },
    ]);
    launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 1);
    assert.throws(
      () => launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 2),
      (e: Error) =>
        e instanceof LaunchArgumentError && /only_one: no precompiled variant/.test(e.message),
    );
    assert.throws(
      () =>
        createLauncher(gpu.launchAbi, signature, [
          { fn: module.getFunction("bad"), assumes: { n: "aligned16" } },
        ]),
      /assumes 'aligned16' of 'n', which is a u32/,
    );
  }),
);

Deno.test(
  "launcher: each bad argument names the kernel, the parameter and the value",
  withFake((gpu, module) => {
    const { launch } = createLauncher(gpu.launchAbi, ALL_TYPES, generic(module, "all_types"));
    const stream = gpu.defaultStream;
    const good: unknown[] = [gpu.alloc(64).ptr, 1, 2, 3, 4, 5, 6, 7];
    const call = (...kernelArgs: unknown[]) => () =>
      launch(1, 1, 1, 1, 1, 1, 0, stream, ...kernelArgs);
    const bad = (index: number, value: unknown) => {
      const args = [...good];
      args[index] = value;
      return call(...args);
    };
    const cases: [() => void, RegExp][] = [
      [call(...good.slice(0, 7)), /all_types: expected 8 kernel arguments .* got 7/],
      [call(...good, 9), /all_types: expected 8 kernel arguments .* got 9/],
      [bad(0, "0x1000"), /parameter 0 'out' \(ptr\) got the string "0x1000"/],
      [bad(0, {}), /parameter 0 'out' \(ptr\) got an object/],
      [bad(1, 1.5), /parameter 1 'i' \(i32\) got 1\.5/],
      [bad(1, 2 ** 31), /parameter 1 'i' \(i32\) got 2147483648/],
      [bad(1, "3"), /parameter 1 'i' \(i32\) got the string "3"/],
      [bad(2, -1), /parameter 2 'u' \(u32\) got -1 .*0\.\.2\^32-1/],
      [bad(3, 2 ** 60), /parameter 3 'l' \(i64\) got 1152921504606847000/],
      [bad(4, -4), /parameter 4 'ul' \(u64\) got -4/],
      [bad(5, "x"), /parameter 5 'x' \(f32\) got the string "x"/],
      [bad(6, 70000), /parameter 6 'h' \(f16\) got 70000 .*16-bit pattern/],
      [bad(7, undefined), /parameter 7 'bh' \(bf16\) got undefined/],
    ];
    for (const [fn, message] of cases) {
      assert.throws(fn, (e: Error) => e instanceof LaunchArgumentError && message.test(e.message));
    }
    assert.throws(
      () => launch(1, 1, 1, 1, 1, 1, 0, null as never, ...good),
      /all_types: the stream argument must be a Stream/,
    );
    assert.throws(
      () => launch(-1, 1, 1, 1, 1, 1, 0, stream, ...good),
      /all_types: grid, block and shared bytes must be integers/,
    );
  }),
);

Deno.test(
  "launcher: a failed launch throws the driver's error with the call name",
  withFake((gpu, module, fake) => {
    const { launch } = createLauncher(gpu.launchAbi, ALL_TYPES, generic(module, "all_types"));
    fake.failNext("cuLaunchKernel", 700);
    assert.throws(
      () => launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 0, 1, 2, 3, 4, 5, 6, 7),
      (e: Error) =>
        e instanceof DriverError && e.call === "cuLaunchKernel" &&
        /CUDA_ERROR_ILLEGAL_ADDRESS \(700\)/.test(e.message),
    );
    // The next launch is unaffected.
    launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 0, 1, 2, 3, 4, 5, 6, 7);
  }),
);

Deno.test(
  "launcher: the deep check rejects pointers outside live allocations; the cheap one does not",
  withFake((gpu, module) => {
    const variants = generic(module, "all_types");
    const options = (checks: LauncherOptions["checks"]) => ({ checks });
    const deep = createLauncher(gpu.launchAbi, ALL_TYPES, variants, options("deep")).launch;
    const cheap = createLauncher(gpu.launchAbi, ALL_TYPES, variants, options("cheap")).launch;
    const buffer = gpu.alloc(64);
    const stray = buffer.ptr + 4096;
    const rest = [1, 2, 3, 4, 5, 6, 7];
    deep(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, buffer.ptr + 8, ...rest);
    assert.throws(
      () => deep(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, stray, ...rest),
      /parameter 0 'out' \(ptr\) got \d+ .*not inside any live allocation/,
    );
    assert.throws(
      () => deep(1, 1, 1, 0, 1, 1, 0, gpu.defaultStream, buffer, ...rest),
      /grid and block must be non-empty/,
    );
    cheap(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, stray, ...rest);
  }),
);

Deno.test(
  "launcher: the generated source is one straight-line function with no allocation sites",
  withFake((gpu, module) => {
    const { source } = createLauncher(gpu.launchAbi, ALL_TYPES, generic(module, "all_types"));
    const body = source.slice(source.indexOf("return function"));
    // Array/object literals, spreads, template strings and `new` would allocate per launch.
    assert.doesNotMatch(body, /new |\[\]|\.\.\.|`|\{\s*\}/);
    assert.match(body, /^return function launch_all_types\(gx, gy, gz, bx, by, bz, shm, stream,/);
  }),
);

Deno.test(
  "launcher (extra): the buffer size is the kernel's exact parameter size, not padded",
  withFake((gpu, module, fake) => {
    // 3 pointers and a u32 end at byte 28; the H100 driver rejects a padded 32.
    const signature: KernelSignature = {
      name: "vec",
      params: [
        { name: "a", type: "ptr" },
        { name: "b", type: "ptr" },
        { name: "c", type: "ptr" },
        { name: "n", type: "u32" },
      ],
    };
    const { launch } = createLauncher(gpu.launchAbi, signature, generic(module, "vec"), {
      packing: "extra",
    });
    launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 16, 32, 48, 7);
    const expected = new Uint8Array(28);
    const dv = new DataView(expected.buffer);
    [16, 32, 48].forEach((ptr, i) => dv.setBigUint64(8 * i, BigInt(ptr), true));
    dv.setUint32(24, 7, true);
    assert.deepEqual(fake.lastLaunch().args, expected);
  }),
);

// ---------------------------------------------------------------------------------------------
// Programmatic dependent launch: cuLaunchKernelEx with the programmatic stream serialization
// attribute, where the driver has it (the fake's launchEx build) and the device and driver
// support it (compute capability 9.0, CUDA 12.3).

const EX = { launchEx: true };

/** The stream's handle address, as the fake records it. */
function streamAddress(stream: { native: Deno.PointerValue }): bigint {
  return stream.native === null ? 0n : BigInt(Deno.UnsafePointer.value(stream.native));
}

for (const packing of ["params", "extra"] as ArgumentPacking[]) {
  Deno.test(
    `launcher (${packing}, programmatic): cuLaunchKernelEx gets the same launch, on each stream`,
    withFake((gpu, module, fake) => {
      setSizes(fake, ALL_TYPES);
      const { launch, programmatic } = createLauncher(
        gpu.launchAbi,
        ALL_TYPES,
        generic(module, "all_types"),
        { packing, programmatic: true },
      );
      assert.equal(programmatic, true);
      const buffer = gpu.alloc(256);
      const a = gpu.createStream(), b = gpu.createStream();
      const values = { out: buffer.ptr, i: -7, u: 9, l: -3n, ul: 5n, x: 2.5, h: 1, bh: 2 };
      const args = [buffer, -7, 9, -3, 5, 2.5, 1, 2];
      // Switching streams back and forth must rewrite the config's stream every time.
      const streams = [a, a, gpu.defaultStream, b, a, gpu.defaultStream, gpu.defaultStream];
      streams.forEach((stream, i) => {
        launch(i + 1, 2, 3, 32 * (i + 1), 2, 1, 16 * i, stream, ...args);
        const record = fake.lastLaunch();
        assert.deepEqual(record.grid, [i + 1, 2, 3], `launch ${i}`);
        assert.deepEqual(record.block, [32 * (i + 1), 2, 1], `launch ${i}`);
        assert.equal(record.sharedMem, 16 * i, `launch ${i}`);
        assert.equal(record.stream, streamAddress(stream), `launch ${i}: stream`);
        assert.deepEqual([record.launchEx, record.programmatic], [true, true], `launch ${i}`);
        assert.deepEqual(record.args, expectedAllTypes(values), `launch ${i}: arguments`);
      });
      assert.equal(fake.launchCount(), streams.length);
    }, EX),
  );
}

Deno.test(
  "launcher (programmatic): a programmatic launch is captured with its attribute",
  withFake((gpu, module, fake) => {
    const { launch } = createLauncher(gpu.launchAbi, ALL_TYPES, generic(module, "all_types"), {
      programmatic: true,
    });
    const stream = gpu.createStream();
    gpu.beginCapture(stream);
    launch(4, 1, 1, 64, 1, 1, 0, stream, 0, 1, 2, 3, 4, 5, 6, 7);
    const graph = gpu.endCapture(stream);
    const captured = fake.lastCapturedLaunch();
    assert.deepEqual([captured.grid[0], captured.launchEx, captured.programmatic], [4, true, true]);
    assert.equal(captured.stream, streamAddress(stream));
    assert.equal(fake.launchCount(), 0);
    graph.launch(stream);
    assert.equal(fake.graphNodesReplayed(), 1);
    graph.destroy();
  }, EX),
);

Deno.test(
  "launcher (programmatic): a failed launch throws the driver's error naming cuLaunchKernelEx",
  withFake((gpu, module, fake) => {
    const { launch } = createLauncher(gpu.launchAbi, ALL_TYPES, generic(module, "all_types"), {
      programmatic: true,
    });
    fake.failNext("cuLaunchKernelEx", 700);
    assert.throws(
      () => launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 0, 1, 2, 3, 4, 5, 6, 7),
      (e: Error) =>
        e instanceof DriverError && e.call === "cuLaunchKernelEx" &&
        /CUDA_ERROR_ILLEGAL_ADDRESS \(700\)/.test(e.message),
    );
    launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 0, 1, 2, 3, 4, 5, 6, 7);
    assert.equal(fake.lastLaunch().programmatic, true);
  }, EX),
);

Deno.test(
  "launcher (programmatic): the generated source allocates nothing either",
  withFake((gpu, module) => {
    const { source } = createLauncher(gpu.launchAbi, ALL_TYPES, generic(module, "all_types"), {
      programmatic: true,
    });
    const body = source.slice(source.indexOf("return function"));
    assert.doesNotMatch(body, /new |\[\]|\.\.\.|`|\{\s*\}/);
    assert.match(body, /launchEx\(config, fn, kernelParams, extra\)/);
    assert.doesNotMatch(body, /launchKernel\(/);
  }, EX),
);

/** Opens the backend on a fake set up by `setup`, and returns what a programmatic launch did. */
function programmaticOutcome(
  options: FakeDriverOptions,
  setup: (fake: FakeControl) => void,
): { offered: boolean; programmatic: boolean; launchEx: boolean } {
  let outcome = { offered: false, programmatic: false, launchEx: false };
  withFake(
    (gpu, module, fake) => {
      const { launch, programmatic } = createLauncher(
        gpu.launchAbi,
        ALL_TYPES,
        generic(module, "all_types"),
        { programmatic: true },
      );
      launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 0, 1, 2, 3, 4, 5, 6, 7);
      const record = fake.lastLaunch();
      outcome = {
        offered: typeof gpu.launchAbi.launchKernelEx === "function",
        programmatic: programmatic && record.programmatic,
        launchEx: record.launchEx,
      };
    },
    options,
    setup,
  )();
  return outcome;
}

Deno.test("launcher (programmatic): falls back to cuLaunchKernel where PDL is unavailable", () => {
  const plain = { offered: false, programmatic: false, launchEx: false };
  // Compute capability 9.0, CUDA 12.4, cuLaunchKernelEx present: programmatic.
  assert.deepEqual(programmaticOutcome(EX, () => {}), {
    offered: true,
    programmatic: true,
    launchEx: true,
  });
  // An Ampere device (no griddepcontrol), a CUDA 12.2 driver (graphs would not keep the
  // attribute), a driver without cuLaunchKernelEx: the plain launch.
  assert.deepEqual(programmaticOutcome(EX, (f) => f.setComputeCapability(8, 0)), plain);
  assert.deepEqual(programmaticOutcome(EX, (f) => f.setDriverVersion(12020)), plain);
  assert.deepEqual(programmaticOutcome({}, () => {}), plain);
  // 12.3 is enough.
  assert.equal(programmaticOutcome(EX, (f) => f.setDriverVersion(12030)).programmatic, true);
});

Deno.test("launcher (programmatic): HIP never launches programmatically", () => {
  const path = buildFakeDriver({ hip: true });
  const fake = openFakeControl(path);
  fake.reset();
  const gpu = openHip({ libraryPath: path });
  try {
    assert.equal(gpu.launchAbi.launchKernelEx, null);
    const module = gpu.loadModule({ format: "hsaco", bytes: new Uint8Array([1, 2, 3]) });
    const { launch, programmatic } = createLauncher(
      gpu.launchAbi,
      ALL_TYPES,
      generic(module, "all_types"),
      { programmatic: true },
    );
    assert.equal(programmatic, false);
    launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, 0, 1, 2, 3, 4, 5, 6, 7);
    assert.equal(fake.lastLaunch().launchEx, false);
  } finally {
    gpu.close();
    fake.close();
  }
});

Deno.test("GEMV geometry by wave fill: steps in flight up to 8 tokens, the K split at 9-16", async () => {
  const path = buildFakeDriver(EX);
  const fake = openFakeControl(path);
  fake.reset();
  const gpu = openCuda({ libraryPath: path });
  try {
    // The fake's 132 SMs hold 2 blocks of every kernel unless told; as ptxas builds them, the
    // one-step 16-row GEMV (71 registers) fits 3 an SM and the two-step one (113) 2.
    const even = await loadLinearOps(gpu);
    fake.setBlocksPerSm("linear_gemv_t8_r16", 3);
    const [ops, forced] = await Promise.all([
      loadLinearOps(gpu),
      loadLinearOps(gpu, { gemvStages: 2 }),
    ]);
    const x = gpu.alloc(2 * 16 * 4096), w = gpu.alloc(2 * 4608 * 4096);
    const kernel = (o: typeof ops, m: number, n: number, k: number) => {
      const launch = o.gemvLaunch(m, n, k, x, w);
      return launch === null ? null : [launch.kernel, launch.blocks, launch.split];
    };
    // 288 and 384 blocks: past 2 · 132, within 3 · 132, so one step; 256 (one wave of two
    // steps) and 896 (past both) keep two; above 8 tokens it is one step as before.
    assert.deepEqual(kernel(ops, 1, 4608, 3584), ["linear_gemv_t8_r16", 288, 8]);
    assert.deepEqual(kernel(ops, 8, 6144, 4096), ["linear_gemv_t8_r16", 384, 8]);
    assert.deepEqual(kernel(ops, 1, 4096, 4096), ["linear_gemv_t8_r16_s2", 256, 8]);
    assert.deepEqual(kernel(ops, 1, 14336, 4096), ["linear_gemv_t8_r16_s2", 896, 8]);
    // Equal occupancy (the loader's query before the fake was told), or forced stages: two.
    assert.deepEqual(kernel(even, 1, 4608, 3584), ["linear_gemv_t8_r16_s2", 288, 8]);
    assert.deepEqual(kernel(forced, 1, 4608, 3584), ["linear_gemv_t8_r16_s2", 288, 8]);
    // 9-16 tokens (one step, 2 blocks an SM): split 4 where its half-size grid fills the waves as
    // well as split 8's: 288 and 384 blocks at split 8 (2 waves each, 0.55 and 0.73 full) become
    // 144 and 192; 256 (one full wave) and 1792 (7 waves, 0.97 full against 4 at 0.85) stay.
    assert.deepEqual(kernel(ops, 16, 4608, 3584), ["linear_gemv_t16_r16", 144, 4]);
    assert.deepEqual(kernel(ops, 9, 6144, 4096), ["linear_gemv_t16_r16", 192, 4]);
    assert.deepEqual(kernel(ops, 16, 4096, 4096), ["linear_gemv_t16_r16", 256, 8]);
    assert.deepEqual(kernel(ops, 16, 28672, 4096), ["linear_gemv_t16_r16", 1792, 8]);
    // A forced split is kept.
    const split8 = await loadLinearOps(gpu, { gemvSplit: 8 });
    assert.deepEqual(kernel(split8, 16, 4608, 3584), ["linear_gemv_t16_r16", 288, 8]);
    // The launch itself follows gemvLaunch.
    const out = gpu.alloc(2 * 4608);
    ops.linear(out, x, w, 1, 4608, 3584, gpu.defaultStream);
    assert.deepEqual(
      [fake.lastLaunch().functionName, fake.lastLaunch().grid[0]],
      ["linear_gemv_t8_r16", 288],
    );
    // A failing occupancy query fails the load with the driver's call named.
    fake.failNext("occupancyMaxActiveBlocksPerMultiprocessor", 1);
    await assert.rejects(() => loadLinearOps(gpu), /cuOccupancyMaxActiveBlocksPerMultiprocessor/);
    for (const b of [x, w, out]) gpu.free(b);
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
});

Deno.test("programmatic launch: of the linear kernels only the GEMVs use it", async () => {
  const path = buildFakeDriver(EX);
  const fake = openFakeControl(path);
  fake.reset();
  const gpu = openCuda({ libraryPath: path });
  try {
    const [auto, plain, deep] = await Promise.all([
      loadLinearOps(gpu),
      loadLinearOps(gpu, { programmatic: false }),
      loadLinearOps(gpu, { gemvStages: 2, gemvSplit: 4 }),
    ]);
    const s = gpu.createStream();
    const x = gpu.alloc(2 * 300 * 4096 + 16), w = gpu.alloc(2 * 4096 * 4096);
    const out = gpu.alloc(2 * 300 * 4096);
    const run = (ops: typeof auto, m: number, xv = x) => {
      ops.linear(out, xv, w, m, 4096, 4096, s);
      return fake.lastLaunch();
    };
    // M = 1: the 16-row GEMV with two steps in flight, 256 blocks, programmatic; gemvLaunch
    // says the same.
    let launch = run(auto, 1);
    assert.deepEqual(
      [launch.functionName, launch.grid[0], launch.launchEx, launch.programmatic],
      ["linear_gemv_t8_r16_s2", 256, true, true],
    );
    assert.deepEqual(auto.gemvLaunch(1, 4096, 4096, x, w), {
      kernel: "linear_gemv_t8_r16_s2",
      split: 8,
      stages: 2,
      blocks: 256,
      programmatic: true,
    });
    launch = run(auto, 16);
    assert.deepEqual([launch.functionName, launch.programmatic], ["linear_gemv_t16_r16", true]);
    // Forced stages and split: the _s2 kernel, half the row groups per block.
    launch = run(deep, 3);
    assert.deepEqual(
      [launch.functionName, launch.grid[0], launch.programmatic],
      ["linear_gemv_t8_r16_s2", 128, true],
    );
    assert.equal(deep.gemvLaunch(3, 4096, 4096, x, w)?.stages, 2);
    // GEMMs and the fallback (a misaligned x) launch plainly, and so does everything when off.
    assert.equal(run(auto, 300).programmatic, false);
    assert.equal(run(auto, 1, x.slice(2, 2 * 4096)).functionName, "linear_gemm_fma");
    assert.equal(fake.lastLaunch().launchEx, false);
    assert.equal(auto.gemvLaunch(300, 4096, 4096, x, w), null);
    launch = run(plain, 1);
    assert.deepEqual([launch.functionName, launch.launchEx], ["linear_gemv_t8_r16_s2", false]);
    assert.equal(plain.gemvLaunch(1, 4096, 4096, x, w)?.programmatic, false);
    await assert.rejects(
      () => loadLinearOps(gpu, { gemvStages: 3 as 2 }),
      /gemvStages must be 1 or 2, got 3/,
    );
    for (const b of [x, w, out]) gpu.free(b);
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
});
