/**
 * Denali's side of bench/launch_compare.sh (GPU machine): host nanoseconds per launch of the
 * 8-argument `args8` kernel through a raw FFI call, the generated closure with kernelParams
 * packing, and the closure with `extra` packing. Same method and kernel as bench/launch_c.c.
 *
 * Usage: deno run -A bench/launch_denali.ts
 *
 * @module
 */

import { openCuda } from "../backends/cuda.ts";
import { loadKernels } from "../kernels/modules.ts";
import { BATCH, printResult, timeRounds } from "./round_timer.ts";

const backend = openCuda();
console.log(`device: ${backend.info.name} (${backend.info.arch}), Deno ${Deno.version.deno}`);
const stream = backend.createStream();
const bufs = [0, 1, 2, 3].map(() => backend.alloc(1024));
const [a, b, c, d] = bufs.map((buf) => buf.ptr);
const drain = () => stream.synchronize();

// The floor for any FFI launcher: the arguments are packed once, and each call only crosses FFI.
const abi = backend.launchAbi;
const paramsKernels = await loadKernels(backend, "runtime_test", { packing: "params" });
const fn = paramsKernels.module.getFunction("args8").native;
const packed = new ArrayBuffer(48);
const dv = new DataView(packed);
[a, b, c, d].forEach((ptr, i) => dv.setBigUint64(i * 8, BigInt(ptr), true));
dv.setInt32(32, 32, true);
dv.setInt32(36, 7, true);
dv.setFloat32(40, 1.5, true);
dv.setFloat32(44, 2.5, true);
const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(packed)));
const slots = new BigUint64Array([0, 8, 16, 24, 32, 36, 40, 44].map((o) => base + BigInt(o)));
const slotsPtr = Deno.UnsafePointer.of(slots);
const raw = abi.launchKernel;
const native = stream.native;
printResult(
  "denali_raw_ffi",
  timeRounds(() => {
    for (let i = 0; i < BATCH; i++) raw(fn, 1, 1, 1, 32, 1, 1, 0, native, slotsPtr, null);
  }, drain),
);

const extraKernels = await loadKernels(backend, "runtime_test", { packing: "extra" });
for (const [name, kernels] of [["params", paramsKernels], ["extra", extraKernels]] as const) {
  const launch = kernels.launchers.args8.launch;
  printResult(
    `denali_closure_${name}`,
    timeRounds(() => {
      for (let i = 0; i < BATCH; i++) {
        launch(1, 1, 1, 32, 1, 1, 0, stream, a, b, c, d, 32, 7, 1.5, 2.5);
      }
    }, drain),
  );
}
backend.close();
