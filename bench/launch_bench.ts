/**
 * Launch overhead in nanoseconds, against the fake driver so it runs anywhere (`deno task
 * bench`): a raw FFI call with pre-packed arguments (the floor), the generated closure in both
 * packings, and a generic per-call launcher (the Triton 2.2-style cost). The closure's overhead
 * is its time minus the raw call's.
 *
 * @module
 */

import { openCuda } from "../backends/cuda.ts";
import { createLauncher } from "../kernels/launcher.ts";
import { KERNEL_MODULES } from "../kernels/manifest.ts";
import { PARAM_BYTES } from "../kernels/signature.ts";
import { buildFakeDriver, openFakeControl } from "../tests/fake_driver/fake.ts";
import { createGenericLauncher } from "./generic_launcher.ts";
import { prepackArgs } from "./prepacked_args.ts";

const path = buildFakeDriver();
const fake = openFakeControl(path);
const gpu = openCuda({ libraryPath: path });
const spec = KERNEL_MODULES.runtime_test.find((k) => k.name === "args8")!;
fake.setParamSizes(spec.params.map((p) => PARAM_BYTES[p.type]));
const module = gpu.loadModule({ format: "ptx", text: "fake" });
const fn = module.getFunction("args8");
const stream = gpu.createStream();
const [a, b, c, d] = [0, 1, 2, 3].map(() => gpu.alloc(256).ptr);

const prepacked = prepackArgs(spec, [a, b, c, d, 32, 7, 1.5, 2.5]);
const slotsPtr = prepacked.kernelParams;
const raw = gpu.launchAbi.launchKernel;
const native = stream.native;

const variants = [{ fn, assumes: {} }];
const params = createLauncher(gpu.launchAbi, spec, variants, { packing: "params" }).launch;
const extra = createLauncher(gpu.launchAbi, spec, variants, { packing: "extra" }).launch;
const generic = createGenericLauncher(gpu.launchAbi, spec, new Map([["", fn.native]]));

Deno.bench("raw FFI cuLaunchKernel (pre-packed)", { group: "launch", baseline: true }, () => {
  raw(fn.native, 1, 1, 1, 32, 1, 1, 0, native, slotsPtr, null);
});
Deno.bench("closure launcher, kernelParams", { group: "launch" }, () => {
  params(1, 1, 1, 32, 1, 1, 0, stream, a, b, c, d, 32, 7, 1.5, 2.5);
});
Deno.bench("closure launcher, extra buffer", { group: "launch" }, () => {
  extra(1, 1, 1, 32, 1, 1, 0, stream, a, b, c, d, 32, 7, 1.5, 2.5);
});
Deno.bench("generic per-call launcher (2.2-style)", { group: "launch" }, () => {
  generic([1, 1, 1], [32, 1, 1], stream, { a, b, c, d, n: 32, m: 7, x: 1.5, y: 2.5 });
});
