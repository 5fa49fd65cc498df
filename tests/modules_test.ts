/**
 * kernels/modules.ts picks a module's code object by the device alone: the newest generic PTX
 * not above the device, the module's arch-specific PTX (sm_90a) only on exactly that arch, the
 * HSACO of the exact gfx arch, and errors that name the remedy otherwise. Every returned image
 * must exist in the repository, so a build that forgot one fails here, not on a user's GPU.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceInfo } from "../backends/backend.ts";
import { imagePath } from "../kernels/modules.ts";

/** A stand-in backend with just the device facts imagePath reads. */
function device(backend: "cuda" | "hip", arch: string, cc: [number, number]): Backend {
  const info: DeviceInfo = {
    backend,
    name: `test ${arch}`,
    arch,
    computeCapability: cc,
    multiprocessors: 1,
    totalMemory: 0,
    driverVersion: 0,
  };
  return { info } as unknown as Backend;
}

const KERNELS_DIR = new URL("../kernels/", import.meta.url);

Deno.test("imagePath: arch-specific PTX only on its exact arch, generic PTX elsewhere", () => {
  const cases: [Backend, string, string][] = [
    [device("cuda", "sm_90", [9, 0]), "linear_sm90", "ptx/linear_sm90.sm_90a.ptx"],
    [device("cuda", "sm_90", [9, 0]), "linear", "ptx/linear.sm_90.ptx"],
    [device("cuda", "sm_100", [10, 0]), "linear_sm90", "ptx/linear_sm90.sm_90.ptx"],
    [device("cuda", "sm_89", [8, 9]), "linear_sm90", "ptx/linear_sm90.sm_80.ptx"],
    [device("cuda", "sm_80", [8, 0]), "attention", "ptx/attention.sm_80.ptx"],
    [device("hip", "gfx90a", [9, 0]), "linear_sm90", "hsaco/linear_sm90.gfx90a.hsaco"],
  ];
  for (const [backend, module, expected] of cases) {
    const path = imagePath(backend, module);
    assert.equal(path, expected, `${backend.info.arch} ${module}`);
    assert.ok(Deno.statSync(new URL(path, KERNELS_DIR)).isFile, `${path} is not built`);
  }
});

Deno.test("imagePath: devices without a built image get an error naming the remedy", () => {
  assert.throws(
    () => imagePath(device("cuda", "sm_75", [7, 5]), "linear"),
    /older than the oldest built PTX \(sm_80\).*Ampere/,
  );
  assert.throws(
    () => imagePath(device("hip", "gfx942", [9, 4]), "linear"),
    /no HSACO built for gfx942.*HSACO_ARCHS/,
  );
});
