/**
 * The GPU tests' paired buffers (tests/support/paired_buffers.ts), with a second CPU backend in
 * the GPU's place: pairs hold the given bytes on both sides, outputs are poisoned on the GPU side
 * only, release frees every buffer once, and sideOf takes one side of a record of pairs.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../backends/backend.ts";
import { CpuBackend } from "../backends/cpu.ts";
import { PairedBuffers, sideOf } from "./support/paired_buffers.ts";

/** A CPU backend that counts its live allocations. */
class CountingBackend extends CpuBackend {
  live = 0;
  override alloc(bytes: number): DeviceBuffer {
    const buffer = super.alloc(bytes);
    this.live++;
    return buffer;
  }
  override free(buffer: DeviceBuffer): void {
    super.free(buffer);
    this.live--;
  }
}

Deno.test("PairedBuffers: the same bytes on both sides, poisoned GPU outputs, one release", () => {
  const gpu = new CountingBackend();
  const env = new PairedBuffers(gpu);
  const data = Uint8Array.from({ length: 40 }, (_, i) => (i * 37 + 5) & 255);
  const p = env.pair(data);
  assert.deepEqual(env.bytesOf(p, 40), { g: data, c: data });

  const zeros = env.pair(24);
  assert.deepEqual(env.bytesOf(zeros, 24), { g: new Uint8Array(24), c: new Uint8Array(24) });

  // At least 16 bytes each, the GPU side NaN bytes, the CPU side zeros.
  const out = env.output(3);
  assert.equal(out.g.bytes, 16);
  assert.deepEqual(env.bytesOf(out, 16), {
    g: new Uint8Array(16).fill(0xff),
    c: new Uint8Array(16),
  });
  const poisoned = env.poisoned(64);
  const seen = new Uint8Array(64);
  gpu.copyToHost(seen, poisoned);
  assert.deepEqual(seen, new Uint8Array(64).fill(0xff));

  // Three pairs on the GPU side plus the poisoned buffer; all freed, once.
  assert.equal(gpu.live, 4);
  env.release();
  assert.equal(gpu.live, 0);
  env.release();
  assert.equal(gpu.live, 0);
  assert.throws(() => gpu.free(p.g), /not a live allocation/);
});

Deno.test("sideOf: each pair's buffer of one side, under its own key", () => {
  const env = new PairedBuffers(new CpuBackend());
  try {
    const q = env.pair(16), out = env.output(32);
    assert.deepEqual(sideOf({ q, out }, "g"), { q: q.g, out: out.g });
    assert.deepEqual(sideOf({ q, out }, "c"), { q: q.c, out: out.c });
    assert.notEqual(sideOf({ q }, "g").q, q.c);
  } finally {
    env.release();
  }
});
