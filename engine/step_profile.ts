/**
 * The step profile (`DENALI_PROFILE=steps`): for every engine step, what it computed (decode rows,
 * prefill rows and tokens, logit rows, K/V positions read, attention pairs), whether it replayed a
 * graph, its device time from a pair of events around its launches, the device's idle time
 * before it (from the previous step's end event to its start event) and the host's time from
 * seeing the previous step finish to launching this one.
 *
 * The columns are typed arrays allocated once when profiling is turned on; recording a step
 * writes numbers into them and records two events, so it allocates nothing. With profiling off
 * the engine holds no profiler at all.
 *
 * {@link summarizeSteps} turns the columns into the figures the benchmarks print: the device's
 * busy fraction, the mean decode batch, and the time of each step kind against its roofline bound
 * (engine/roofline.ts).
 *
 * @module
 */

import type { Backend, DeviceEvent, Stream } from "../backends/backend.ts";
import {
  type DeviceCeilings,
  type ModelCost,
  phasedBoundMs,
  prefillChunkWork,
  rooflineMs,
  stepCost,
} from "./roofline.ts";
import type { BatchPlan } from "./scheduler.ts";

/** Whether `DENALI_PROFILE` asks for the step profile (false where env access is denied). */
export function profileRequested(): boolean {
  try {
    return (Deno.env.get("DENALI_PROFILE") ?? "").split(",").includes("steps");
  } catch {
    return false; // no --allow-env: the default, off
  }
}

/** The columns of a step profile: one typed array per figure, one element per step. */
export interface StepColumns {
  /** Decode rows of the step. */
  readonly decodeRows: Int32Array;
  /** Prefill chunks of the step. */
  readonly prefillRows: Int32Array;
  /** Tokens of those chunks. */
  readonly prefillTokens: Int32Array;
  /** Rows of logits the lm head produced. */
  readonly logitRows: Int32Array;
  /** K/V positions read (decode contexts plus prefill chunks' contexts at their end). */
  readonly kvTokensRead: Float64Array;
  /** (query, key) pairs scored by attention, per layer and head group. */
  readonly attentionPairs: Float64Array;
  /** 1 if the step replayed a captured graph. */
  readonly graph: Uint8Array;
  /** Device time of the step, start event to end event. */
  readonly deviceMs: Float64Array;
  /** Device idle before the step: the previous step's end event to this start event (0 first). */
  readonly deviceIdleMs: Float64Array;
  /** Host time from seeing the previous step done to starting this launch (0 first). */
  readonly hostGapMs: Float64Array;
}

/** Empty columns for `capacity` steps. */
export function stepColumns(capacity: number): StepColumns {
  const i32 = () => new Int32Array(capacity), f64 = () => new Float64Array(capacity);
  return {
    decodeRows: i32(),
    prefillRows: i32(),
    prefillTokens: i32(),
    logitRows: i32(),
    kvTokensRead: f64(),
    attentionPairs: f64(),
    graph: new Uint8Array(capacity),
    deviceMs: f64(),
    deviceIdleMs: f64(),
    hostGapMs: f64(),
  };
}

/**
 * The recorded steps, `count` of them valid in each column: decode rows, prefill rows and
 * tokens, logit rows, K/V positions read, attention pairs, whether a graph ran, device time,
 * device idle before the step and host gap before its launch.
 */
export interface StepProfileData extends StepColumns {
  /** Steps recorded. */
  readonly count: number;
  /** Steps not recorded because the columns were full. */
  readonly dropped: number;
}

/** Events of one step in flight. */
interface Slot {
  readonly start: DeviceEvent;
  readonly end: DeviceEvent;
  index: number;
}

/** Records steps into preallocated columns; see the module doc. */
export class StepProfiler {
  /** What has been recorded; the columns are live, read them between steps. */
  readonly data: { count: number; dropped: number } & StepColumns;

  readonly #stream: Stream;
  // Enough slots for steps in flight; a step's end event stays needed until the next one ends.
  readonly #slots: Slot[] = [];
  #launched = 0;
  #finished = 0;
  #doneAt = -1;
  #lastEnd: DeviceEvent | null = null;

  /**
   * @param backend the device the steps run on
   * @param stream the stream the steps are launched on
   * @param capacity most steps recorded (later ones are counted in `dropped`)
   */
  constructor(backend: Backend, stream: Stream, capacity = 1 << 16) {
    this.#stream = stream;
    this.data = { count: 0, dropped: 0, ...stepColumns(capacity) };
    for (let i = 0; i < 4; i++) {
      this.#slots.push({ start: backend.createEvent(), end: backend.createEvent(), index: -1 });
    }
  }

  /**
   * Call right before launching `plan` (positions not yet advanced): notes its shape and records
   * the start event.
   */
  beforeLaunch(plan: BatchPlan): void {
    const slot = this.#slots[this.#launched % this.#slots.length];
    if (this.#launched - this.#finished >= this.#slots.length) {
      throw new Error("StepProfiler: more steps in flight than event slots");
    }
    this.#launched++;
    const i = this.data.count < this.data.decodeRows.length ? this.data.count++ : -1;
    slot.index = i;
    slot.start.record(this.#stream);
    if (i < 0) {
      this.data.dropped++;
      return;
    }
    let kv = 0, pairs = 0, prefillTokens = 0, logits = 0;
    for (let e = 0; e < plan.count; e++) {
      const seq = plan.seq(e);
      logits += plan.samples[e];
      if (e < plan.numDecodes) {
        const context = seq.numComputedTokens + 1;
        kv += context;
        pairs += context;
      } else {
        const chunk = prefillChunkWork(seq.numComputedTokens, plan.numTokens[e]);
        kv += chunk.kvTokensRead;
        pairs += chunk.pairs;
        prefillTokens += plan.numTokens[e];
      }
    }
    this.data.decodeRows[i] = plan.numDecodes;
    this.data.prefillRows[i] = plan.count - plan.numDecodes;
    this.data.prefillTokens[i] = prefillTokens;
    this.data.logitRows[i] = logits;
    this.data.kvTokensRead[i] = kv;
    this.data.attentionPairs[i] = pairs;
    this.data.hostGapMs[i] = this.#doneAt < 0 ? 0 : performance.now() - this.#doneAt;
  }

  /** Call right after the step's launches: records the end event and whether a graph ran. */
  afterLaunch(replayedGraph: boolean): void {
    const slot = this.#slots[(this.#launched - 1) % this.#slots.length];
    slot.end.record(this.#stream);
    if (slot.index >= 0) this.data.graph[slot.index] = replayedGraph ? 1 : 0;
  }

  /**
   * Call once the oldest launched step has finished on the device (its events have completed):
   * reads its device time and the idle gap before it.
   */
  stepDone(): void {
    this.#doneAt = performance.now();
    const slot = this.#slots[this.#finished % this.#slots.length];
    this.#finished++;
    const i = slot.index;
    if (i >= 0) {
      this.data.deviceMs[i] = slot.end.elapsedMsSince(slot.start);
      this.data.deviceIdleMs[i] = this.#lastEnd === null
        ? 0
        : slot.start.elapsedMsSince(this.#lastEnd);
    }
    this.#lastEnd = slot.end;
  }

  /** Forgets a launched step that failed (its events may never complete). */
  stepFailed(): void {
    const slot = this.#slots[this.#finished % this.#slots.length];
    this.#finished++;
    if (slot.index >= 0) this.data.deviceMs[slot.index] = NaN;
    this.#lastEnd = null;
    this.#doneAt = -1;
  }

  /** Starts over (keeps the columns): e.g. after a warm-up. */
  reset(): void {
    this.data.count = 0;
    this.data.dropped = 0;
    this.#lastEnd = null;
    this.#doneAt = -1;
  }

  /** Destroys the events. */
  free(): void {
    for (const slot of this.#slots) {
      slot.start.destroy();
      slot.end.destroy();
    }
    this.#slots.length = 0;
  }
}

/** The step kinds the summary splits time by. */
export type StepKind = "decode" | "mixed" | "prefill";

/** Totals over a set of steps. */
export interface KindTotals {
  /** Steps in the set. */
  steps: number;
  /** Device time, summed. */
  deviceMs: number;
  /** Roofline bounds, summed (NaN without ceilings). */
  boundMs: number;
  /** Phased bounds (attention, then the rest: `phasedBoundMs`), summed (NaN without ceilings). */
  phasedMs: number;
  /** Decode rows, summed. */
  decodeRows: number;
  /** Prefill tokens, summed. */
  prefillTokens: number;
}

/** What {@link summarizeSteps} reports. */
export interface StepSummary {
  /** Steps counted (failed steps are skipped). */
  readonly steps: number;
  /** Device time over all steps. */
  readonly deviceMs: number;
  /** Device idle between steps (from events). */
  readonly idleMs: number;
  /** deviceMs / (deviceMs + idleMs): the device's busy fraction from the first step's start. */
  readonly busyFraction: number;
  /** Mean decode rows over the steps that have any. */
  readonly meanDecodeBatch: number;
  /** Mean host time from a step's end being seen to the next launch. */
  readonly meanHostGapMs: number;
  /** Steps that replayed a graph. */
  readonly graphSteps: number;
  /** Totals per step kind. */
  readonly kinds: Readonly<Record<StepKind, KindTotals>>;
  /** Decode-only steps of at least `bigBatch` rows (the roofline target's set). */
  readonly bigDecode: KindTotals;
}

/** The kind of step i: decode rows only, prefill only, or both. */
export function stepKind(data: StepProfileData, i: number): StepKind {
  if (data.prefillRows[i] === 0) return "decode";
  return data.decodeRows[i] === 0 ? "prefill" : "mixed";
}

function emptyTotals(): KindTotals {
  return { steps: 0, deviceMs: 0, boundMs: 0, phasedMs: 0, decodeRows: 0, prefillTokens: 0 };
}

/**
 * Sums the profile: busy fraction, mean decode batch, and device time against the roofline bound
 * per step kind and for decode-only steps of at least `bigBatch` rows. Without `ceilings` the
 * bounds are NaN.
 */
export function summarizeSteps(
  data: StepProfileData,
  model: ModelCost,
  ceilings: DeviceCeilings | null,
  bigBatch = 128,
): StepSummary {
  const kinds: Record<StepKind, KindTotals> = {
    decode: emptyTotals(),
    mixed: emptyTotals(),
    prefill: emptyTotals(),
  };
  const bigDecode = emptyTotals();
  let steps = 0, deviceMs = 0, idleMs = 0, decodeSteps = 0, decodeRows = 0, gap = 0, graphs = 0;
  for (let i = 0; i < data.count; i++) {
    const ms = data.deviceMs[i];
    if (!Number.isFinite(ms)) continue;
    steps++;
    deviceMs += ms;
    idleMs += data.deviceIdleMs[i];
    gap += data.hostGapMs[i];
    graphs += data.graph[i];
    if (data.decodeRows[i] > 0) {
      decodeSteps++;
      decodeRows += data.decodeRows[i];
    }
    let bound = NaN, phased = NaN;
    if (ceilings !== null) {
      const cost = stepCost(model, {
        tokens: data.decodeRows[i] + data.prefillTokens[i],
        logitRows: data.logitRows[i],
        kvTokensRead: data.kvTokensRead[i],
        attentionPairs: data.attentionPairs[i],
      });
      bound = rooflineMs(cost, ceilings);
      phased = phasedBoundMs(cost, ceilings);
    }
    const kind = stepKind(data, i);
    const add = (t: KindTotals) => {
      t.steps++;
      t.deviceMs += ms;
      t.boundMs += bound;
      t.phasedMs += phased;
      t.decodeRows += data.decodeRows[i];
      t.prefillTokens += data.prefillTokens[i];
    };
    add(kinds[kind]);
    if (kind === "decode" && data.decodeRows[i] >= bigBatch) add(bigDecode);
  }
  return {
    steps,
    deviceMs,
    idleMs,
    busyFraction: deviceMs + idleMs > 0 ? deviceMs / (deviceMs + idleMs) : NaN,
    meanDecodeBatch: decodeSteps > 0 ? decodeRows / decodeSteps : 0,
    meanHostGapMs: steps > 0 ? gap / steps : 0,
    graphSteps: graphs,
    kinds,
    bigDecode,
  };
}

/** The summary as the lines the benchmarks print. */
export function formatSummary(s: StepSummary): string[] {
  const ms = (x: number) => x.toFixed(1);
  const over = (t: KindTotals, bound: number) =>
    Number.isFinite(bound) && bound > 0 ? (t.deviceMs / bound).toFixed(2) : "-";
  const bounds = (t: KindTotals) =>
    `bound_ms=${ms(t.boundMs)} of_bound=${over(t, t.boundMs)} phased_ms=${ms(t.phasedMs)} ` +
    `of_phased=${over(t, t.phasedMs)}`;
  const lines = [
    `PROFILE steps=${s.steps} device_ms=${ms(s.deviceMs)} idle_ms=${ms(s.idleMs)} ` +
    `busy=${s.busyFraction.toFixed(3)} mean_decode_batch=${s.meanDecodeBatch.toFixed(1)} ` +
    `mean_host_gap_ms=${s.meanHostGapMs.toFixed(3)} graph_steps=${s.graphSteps}`,
  ];
  for (const kind of ["decode", "mixed", "prefill"] as const) {
    const t = s.kinds[kind];
    lines.push(
      `PROFILE kind=${kind} steps=${t.steps} device_ms=${ms(t.deviceMs)} ${bounds(t)} ` +
        `decode_rows=${t.decodeRows} prefill_tokens=${t.prefillTokens}`,
    );
  }
  const b = s.bigDecode;
  lines.push(
    `PROFILE kind=decode_b128 steps=${b.steps} device_ms=${ms(b.deviceMs)} ${bounds(b)}`,
  );
  return lines;
}
