/**
 * A CPU backend with stand-in device graphs, for engine tests of graph capture and replay.
 *
 * @module
 */

import { CpuBackend } from "../../backends/cpu.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import type { ModelOps } from "../../ops/ops.ts";

/**
 * A CPU backend that "captures" like a GPU: between beginCapture and endCapture each launch is
 * recorded with its arguments instead of run, and the graph replays the records. Copies during
 * a capture are refused, as inputs must be uploaded before a replay, not baked into the graph.
 * `fail` makes a named op throw, to test failed steps.
 */
export class GraphCpuBackend extends CpuBackend {
  recording: (() => void)[] | null = null;
  fail: string | null = null;

  override beginCapture(): void {
    if (this.recording) throw new Error("capture already in progress");
    this.recording = [];
  }

  override endCapture() {
    const calls = this.recording;
    if (!calls) throw new Error("no capture in progress");
    this.recording = null;
    return { launch: () => calls.forEach((call) => call()), destroy() {} };
  }

  override copyToDevice(dst: Parameters<CpuBackend["copyToDevice"]>[0], src: ArrayBufferView) {
    if (this.recording) throw new Error("copyToDevice during a capture");
    super.copyToDevice(dst, src);
  }

  override copyToHost(dst: ArrayBufferView, src: Parameters<CpuBackend["copyToHost"]>[1]) {
    if (this.recording) throw new Error("copyToHost during a capture");
    super.copyToHost(dst, src);
  }

  /** The CPU operators, wrapped to honour `fail` and to record during a capture. */
  ops(): ModelOps {
    const ops = cpuOps();
    const wrapped: Record<string, unknown> = { ...ops };
    for (const [name, value] of Object.entries(ops)) {
      if (typeof value !== "function" || name.endsWith("WorkspaceBytes")) continue;
      const fn = value as (...args: unknown[]) => void;
      wrapped[name] = (...args: unknown[]) => {
        if (this.fail === name) throw new Error(`injected ${name} failure`);
        if (name === "prepareLinear" && this.recording) throw new Error("prepareLinear in capture");
        // A graph keeps the arguments as they were at capture; argument records (and the
        // records inside them, as qkvRope's cache) are refilled by the caller after each call,
        // so the recording snapshots them.
        const snapshot = args.map(snapshotRecord);
        if (this.recording) this.recording.push(() => fn(...snapshot));
        else fn(...args);
      };
    }
    return wrapped as unknown as ModelOps;
  }
}

/** A copy of a plain argument record and of the plain records in it; anything else as it is. */
function snapshotRecord(value: unknown): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, snapshotRecord(v)]));
}
