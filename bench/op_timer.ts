/**
 * Where a step's device time goes, operator by operator, without a profiler on the machine: a
 * wrapper around a {@link ModelOps} that, while armed, records a pair of events around every
 * operator call on the call's own stream, and sums the intervals per operator (linear per
 * weight shape, since one step runs four of them per layer).
 *
 * For benchmarks only (bench/step_ops.ts): it allocates per call, and events between launches
 * keep a programmatically launched kernel from starting before the previous one ends, so the
 * intervals are each operator alone. Run the engine with graphs off so every call passes
 * through it. Recording starts at the first forward pass (embedding call into the residual
 * stream; a prefill's gather of its sampled rows, also an embedding call, is not one) after `arm`
 * and ends after the number of passes it asked for, so only whole steps count. `gate`, when
 * given, is launched before each forward pass and holds the device while the host queues the
 * step's launches, so an interval measures the device and not the host's launch pace.
 *
 * @module
 */

import type { Backend, DeviceBuffer, DeviceEvent, Stream } from "../backends/backend.ts";
import type { ModelOps } from "../ops/ops.ts";

/** One operator's total over the timed steps. */
export interface OpTotal {
  /** The operator, and for linear its weight shape (`linear 6144x4096`). */
  readonly name: string;
  /** Calls over all timed steps. */
  readonly calls: number;
  /** Device milliseconds over all timed steps. */
  readonly ms: number;
}

/** The figures of the timed steps, summed per operator. */
export interface OpReport {
  /** Steps timed (forward passes begun while armed). */
  readonly steps: number;
  /** Per operator, largest total first. */
  readonly ops: readonly OpTotal[];
  /** The operators' intervals summed, over all steps. */
  readonly opMs: number;
  /** Each step's first event to its last, summed: opMs plus the gaps between calls. */
  readonly spanMs: number;
}

/** Whether an argument is a stream: what the backends' streams all have. */
function isStream(value: unknown): value is Stream {
  return typeof value === "object" && value !== null && "native" in value &&
    typeof (value as Stream).synchronize === "function";
}

/**
 * The name an operator call is summed under: linear by its weight's n×k, linearSiluMul by its
 * output's n and k (its weight has 2n rows), linearRmsNorm by its weight's n×k.
 */
export function opName(op: string, args: readonly unknown[]): string {
  if (op === "linear" || op === "linearSiluMul") return `${op} ${args[4]}x${args[5]}`;
  return op === "linearRmsNorm" ? `${op} ${args[7]}x${args[8]}` : op;
}

/** Records event pairs around the operator calls of a {@link ModelOps} while armed. */
export class OpTimer {
  /** The wrapped operators: pass these to the engine (`Engine.load(..., { ops })`). */
  readonly ops: ModelOps;
  readonly #gate: ((stream: Stream) => void) | null;
  readonly #events: DeviceEvent[] = [];
  readonly #names: string[] = [];
  /** Index into #events of each step's first call (its embedding). */
  readonly #stepStarts: number[] = [];
  #used = 0;
  #armed = false;
  /**
   * The device address a forward pass's first embedding call writes (the residual stream): a
   * prefill pass also calls embedding to gather the rows it samples, into another buffer, and
   * that call must not count as a pass.
   */
  #passOut: number | null = null;
  /** Forward passes to record once armed; the next one after them disarms. */
  #stepLimit = 0;

  /**
   * @param capacity most operator calls recorded before arming stops on its own
   * @param gate launches a device wait on a stream (e.g. runtime_test's spin_ns)
   */
  constructor(
    backend: Backend,
    ops: ModelOps,
    capacity: number,
    gate: ((stream: Stream) => void) | null = null,
  ) {
    this.#gate = gate;
    for (let i = 0; i < 2 * capacity; i++) this.#events.push(backend.createEvent());
    // A proxy, not a copy: the operators may be a class's methods, which Object.keys misses.
    const wrappers = new Map<PropertyKey, unknown>();
    this.ops = new Proxy(ops, {
      get: (target, key) => {
        const value = Reflect.get(target, key);
        if (typeof value !== "function") return value;
        let wrapper = wrappers.get(key);
        if (wrapper === undefined) {
          const call = value as (...args: unknown[]) => unknown;
          wrapper = (...args: unknown[]) => this.#call(String(key), call, target, args);
          wrappers.set(key, wrapper);
        }
        return wrapper;
      },
    });
  }

  /**
   * Records the next `steps` forward passes (whole ones: from an embedding call up to the next),
   * then stops on its own: a pass the engine launches before the caller could disarm is not
   * counted.
   */
  arm(steps: number): void {
    this.#armed = true;
    this.#stepLimit = this.#stepStarts.length + steps;
  }

  /** Stops recording. */
  disarm(): void {
    this.#armed = false;
  }

  #call(key: string, call: (...args: unknown[]) => unknown, ops: ModelOps, args: unknown[]) {
    const stream = this.#armed ? args.findLast(isStream) : undefined;
    if (stream === undefined || this.#used + 2 > this.#events.length) {
      if (this.#armed && stream !== undefined) this.disarm(); // out of events
      return call.apply(ops, args);
    }
    const passStart = key === "embedding" && this.#isPassStart(args[0] as DeviceBuffer);
    if (passStart && this.#stepStarts.length === this.#stepLimit) {
      this.disarm(); // the passes asked for are recorded
      return call.apply(ops, args);
    }
    if (passStart) {
      // A forward pass begins: hold the device while the host queues it.
      this.#gate?.(stream);
      this.#stepStarts.push(this.#used);
    } else if (this.#stepStarts.length === 0) {
      return call.apply(ops, args); // the rest of a step that began before arming
    }
    this.#names.push(opName(key, args));
    this.#events[this.#used++].record(stream);
    const result = call.apply(ops, args);
    if (result === false) {
      // A fused operator that declined (linearSiluMul, linearRmsNorm) launched nothing: the
      // operators its caller runs instead are what the step spends, so it is not an operator.
      this.#used--;
      this.#names.pop();
      return result;
    }
    this.#events[this.#used++].record(stream);
    return result;
  }

  /** Whether an embedding call writing `out` begins a forward pass (armed between passes). */
  #isPassStart(out: DeviceBuffer): boolean {
    this.#passOut ??= out.ptr;
    return out.ptr === this.#passOut;
  }

  /** Waits for the recorded events and sums them per operator. */
  report(): OpReport {
    if (this.#used === 0) return { steps: 0, ops: [], opMs: 0, spanMs: 0 };
    this.#events[this.#used - 1].synchronize();
    const intervals: number[] = [];
    for (let i = 0; i < this.#used; i += 2) {
      intervals.push(this.#events[i + 1].elapsedMsSince(this.#events[i]));
    }
    const starts = this.#stepStarts;
    let spanMs = 0;
    starts.forEach((start, i) => {
      const end = i + 1 < starts.length ? starts[i + 1] : this.#used;
      spanMs += this.#events[end - 1].elapsedMsSince(this.#events[start]);
    });
    return summarizeOps(this.#names, intervals, starts.length, spanMs);
  }

  /** Forgets what was recorded, keeping the events for the next window. */
  reset(): void {
    this.#armed = false;
    this.#used = 0;
    this.#names.length = 0;
    this.#stepStarts.length = 0;
    this.#passOut = null;
  }

  /** Releases the events. */
  destroy(): void {
    for (const event of this.#events) event.destroy();
    this.#events.length = 0;
  }
}

/** Sums intervals (ms) per name, largest total first. */
export function summarizeOps(
  names: readonly string[],
  intervals: readonly number[],
  steps: number,
  spanMs: number,
): OpReport {
  const totals = new Map<string, { calls: number; ms: number }>();
  let opMs = 0;
  names.forEach((name, i) => {
    const total = totals.get(name) ?? { calls: 0, ms: 0 };
    total.calls++;
    total.ms += intervals[i];
    opMs += intervals[i];
    totals.set(name, total);
  });
  const ops = [...totals].map(([name, t]) => ({ name, calls: t.calls, ms: t.ms }))
    .sort((a, b) => b.ms - a.ms);
  return { steps, ops, opMs, spanMs };
}

/** The report as `OPS` lines: per operator its calls and µs per step and its share. */
export function formatOpReport(report: OpReport, label: string): string[] {
  const perStep = (ms: number) => (1000 * ms / Math.max(1, report.steps)).toFixed(1);
  const lines = report.ops.map((op) =>
    `OPS ${label} op="${op.name}" calls_per_step=${
      (op.calls / Math.max(1, report.steps)).toFixed(1)
    } us_per_step=${perStep(op.ms)} us_per_call=${(1000 * op.ms / op.calls).toFixed(2)} share=${
      (op.ms / report.opMs).toFixed(3)
    }`
  );
  lines.push(
    `OPS ${label} steps=${report.steps} ops_us_per_step=${perStep(report.opMs)} ` +
      `span_us_per_step=${perStep(report.spanMs)}`,
  );
  return lines;
}
