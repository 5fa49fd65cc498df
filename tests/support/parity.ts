/**
 * Parity with Hugging Face transformers, shared by the CPU test (tests/engine/parity_test.ts)
 * and the GPU test (tests/gpu/parity_gpu_test.ts): the engine runs the checkpoints of
 * tests/fixtures/models/ (tiny random Llamas written by tools/make_fixtures.py) and must compute
 * what HF computed on them, recorded in each model's reference.json.
 *
 * What is compared, and why the tolerances are what they are:
 *
 * - Last-position logits. Denali computes in bf16 with fp32 accumulation; HF's bf16 run rounds
 *   at other points (attention scores in bf16, RoPE tables in bf16, RMSNorm twice), so neither
 *   is "the" bf16 answer. The fp32 run (the same bf16 weights, upcast) is the exact one: HF's
 *   bf16 logits lie 5e-3..1e-2 (relative L2) from it on these models, and Denali's CPU backend
 *   5e-3..1e-2. So Denali must be within {@link LOGITS_TOL} = 2e-2 of fp32 and, by the triangle
 *   inequality, within 2e-2 plus HF's own bf16 error of HF's bf16 logits (which the two
 *   roundings can legitimately put 7e-3..1.6e-2 apart). Real bugs land far outside: RoPE theta
 *   off by 2x, llama3 scaling ignored or with factor 4 instead of 8, or an RMSNorm weight
 *   ignored move the long prompt's logits by 9e-2..7e-1.
 *
 * - Greedy continuations, token for token against HF's bf16 `generate()`. Random models have
 *   near ties (top-2 gaps of 0.003 in logits of spread 3), where the rounding noise of any bf16
 *   engine decides: HF's own bf16 and fp32 continuations part at fp32 gaps of 0.007..0.05 on
 *   these fixtures (0.13 with other seeds). So a different token at step t (same prefix so far)
 *   fails unless it is a near tie: its fp32 logit (reference.json's teacher-forced fp32 top-8 at
 *   that step) is within `tie` of the fp32 maximum. `tie` is {@link TIE_SIGMAS}·√2·σ, σ the RMS
 *   per-logit error of this engine's own last-position logits against fp32 on the same prompts:
 *   a logit difference carries √2·σ of noise, and 8 times that is not reached by chance (about
 *   0.26..0.35 on the CPU backend, while the decode bugs tried, such as a position or context
 *   length off by one, miss by 0.4..3.3). After a tie the two sequences condition on different
 *   tokens, so the comparison of that prompt stops there.
 *
 * - Batching: the prompts submitted together must give each prompt's tokens alone (again up to
 *   a near tie, judged on the engine's own logits for the shared prefix), and an engine with a
 *   small token budget and KV cache (chunked prefill, queueing, preemption) must still follow HF.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Engine, type EngineOptions } from "../../engine/engine.ts";
import type { ChatMessage } from "../../engine/tokenizer.ts";
import { relativeError } from "./numeric.ts";

/** The Llama checkpoints tools/make_fixtures.py writes; each must be present. */
export const PARITY_MODELS = ["llama2-mha", "llama3-gqa", "llama3-tied"] as const;

/**
 * The other families' checkpoints (Qwen2 with biases and tied embeddings, Qwen3 with q/k norms
 * and head_dim != hidden / heads, Mistral). Their tests are skipped, saying so, until the
 * fixtures are generated (`python3 tools/make_fixtures.py --only qwen2-bias,qwen3-qknorm,mistral`
 * on the GPU machine) and committed.
 */
export const FAMILY_PARITY_MODELS = ["qwen2-bias", "qwen3-qknorm", "mistral"] as const;

/**
 * The quantized checkpoints (FP8 E4M3 weights, compressed-tensors), skipped like the families'
 * while their fixtures are missing. Their reference runs HF on the dequantized weights (codes ×
 * scale) in float32; Denali multiplies by exactly those values (the CPU backend applies each row's
 * scale to an exact sum, the GPU GEMV to an fp32 one; the GPU prefill path rounds each
 * dequantized weight to bf16 once, 2^-9 relative, about 1e-3 on a projection's output), so the
 * weights add no error beyond bf16's and the bf16 tolerances hold unchanged. A scale not applied
 * (×~100), taken from another row or part of a fused weight, or codes decoded with the wrong bias
 * or order, land far outside them.
 *
 * The AWQ checkpoint (4-bit, group 128, AutoAWQ's GEMM packing) is argued the same way: HF runs
 * on (q − z)·s in float32, which Denali's CPU and GPU GEMV compute exactly in f32 (a 5-bit
 * integer times an f16 scale), and its prefill path rounds each to bf16 once. A nibble read in
 * the wrong order, a zero point or scale from another group or row, lands far outside.
 */
export const QUANTIZED_PARITY_MODELS = ["llama3-gqa-fp8", "llama3-gqa-awq"] as const;

/** Where they live. */
export const FIXTURES_URL = new URL("../fixtures/models/", import.meta.url);

/** Relative L2 error allowed against the fp32 reference logits (see the module doc). */
export const LOGITS_TOL = 2e-2;

/** Width of a near tie in noise standard deviations of a logit difference. */
export const TIE_SIGMAS = 8;

/** Smallest near-tie width: covers the 7-digit JSON rounding and fp32 summation order. */
export const MIN_TIE = 0.02;

/** One generation step of HF's bf16 continuation, teacher-forced through the fp32 model. */
export interface ReferenceStep {
  /** The fp32 model's top-k token ids at this step, best first. */
  readonly ids: readonly number[];
  /** Their fp32 logits. */
  readonly fp32: readonly number[];
  /** Their logits in HF's bf16 generate() at this step. */
  readonly bf16: readonly number[];
}

/** One prompt of reference.json. */
export interface ReferencePrompt {
  /** "bos-only", "short", "medium", "long" or "chat". */
  readonly name: string;
  /** The prompt's text (encoded with special tokens), for text prompts. */
  readonly text?: string;
  /** The conversation (rendered with the chat template), for the chat prompt. */
  readonly messages?: readonly ChatMessage[];
  /** transformers' apply_chat_template text of `messages` (with the generation prompt). */
  readonly chatText?: string;
  /** The token ids HF's tokenizer gave. */
  readonly ids: readonly number[];
  /** Full-vocabulary logits at the last prompt position. */
  readonly logits: { readonly bf16: readonly number[]; readonly fp32: readonly number[] };
  /** HF's greedy continuations, EOS ignored. */
  readonly greedy: {
    /** generate() in bf16: the continuation the engine must follow. */
    readonly bf16: readonly number[];
    /** generate() in fp32. */
    readonly fp32: readonly number[];
    /** How many leading tokens bf16 and fp32 share. */
    readonly agree: number;
    /** bf16 decoded by HF, special tokens kept. */
    readonly text: string;
    /** bf16 decoded by HF with skip_special_tokens (as the engine streams). */
    readonly textSkipSpecial: string;
  };
  /** Per step of greedy.bf16, the fp32 model's top-k there. */
  readonly steps: readonly ReferenceStep[];
}

/** A model's reference.json. */
export interface Reference {
  /** The fixture's name, its directory under tests/fixtures/models/. */
  readonly model: string;
  /** Where HF ran: "cuda" for the fixtures of record, "cpu" for a dry run. */
  readonly device: string;
  /** torch, transformers and tokenizers versions. */
  readonly versions: Readonly<Record<string, string>>;
  /** Length of every greedy continuation. */
  readonly maxNewTokens: number;
  /** Entries per step in `steps`. */
  readonly topK: number;
  /** The prompts and what HF computed for each. */
  readonly prompts: readonly ReferencePrompt[];
}

/** How to regenerate the fixtures, for every "missing" message. */
const REMEDY = "generate them on the GPU machine with `python3 tools/make_fixtures.py` " +
  "(torch + transformers; see the script's docstring) and commit tests/fixtures/models/";

/** The directory of fixture model `name`, as a path. */
export function modelDir(name: string): string {
  return new URL(`${name}/`, FIXTURES_URL).pathname;
}

/** Reads `name`'s reference.json, failing with the remedy when the fixtures are missing. */
export async function loadReference(name: string): Promise<Reference> {
  const file = `${modelDir(name)}reference.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`parity fixture ${file} is missing: ${REMEDY}`);
    }
    throw error;
  }
  const reference = JSON.parse(text) as Reference;
  assert.equal(reference.model, name, `${file} describes model ${reference.model}`);
  assert.ok(reference.prompts.length > 0, `${file} has no prompts`);
  return reference;
}

/** Index of the largest value. */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Largest minus second-largest value. */
export function top2Margin(values: ArrayLike<number>): number {
  let first = -Infinity, second = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > first) [first, second] = [v, first];
    else if (v > second) second = v;
  }
  return first - second;
}

/** Root-mean-square of the elementwise difference. */
export function rmsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "compared arrays differ in length");
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] - b[i]) ** 2;
  return Math.sqrt(sum / a.length);
}

/**
 * The near-tie width for an engine whose last-position logits are `logits` (one per prompt):
 * TIE_SIGMAS·√2·σ, σ the largest RMS per-logit error against fp32 over the prompts.
 */
export function tieWidth(prompts: readonly ReferencePrompt[], logits: Float32Array[]): number {
  let sigma = 0;
  prompts.forEach((p, i) => sigma = Math.max(sigma, rmsDifference(logits[i], p.logits.fp32)));
  return Math.max(MIN_TIE, TIE_SIGMAS * Math.SQRT2 * sigma);
}

/**
 * Problems with one prompt's last-position logits (empty when they pass): every value finite,
 * relative error to fp32 <= LOGITS_TOL and to HF bf16 <= LOGITS_TOL + HF's own bf16 error, and
 * the fp32 argmax wherever its top-2 margin exceeds `tie`.
 */
export function logitsProblems(p: ReferencePrompt, logits: Float32Array, tie: number): string[] {
  const problems: string[] = [];
  const { fp32, bf16 } = p.logits;
  if (logits.length !== fp32.length) {
    return [`${p.name}: ${logits.length} logits, the vocabulary has ${fp32.length}`];
  }
  const bad = logits.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) return [`${p.name}: logit ${bad} is ${logits[bad]}`];
  const e32 = relativeError(logits, fp32);
  const hf = relativeError(bf16, fp32);
  const e16 = relativeError(logits, bf16);
  if (!(e32 <= LOGITS_TOL)) {
    problems.push(`${p.name}: relative error to HF fp32 ${e32.toExponential(2)} > ${LOGITS_TOL}`);
  }
  if (!(e16 <= LOGITS_TOL + hf)) {
    problems.push(
      `${p.name}: relative error to HF bf16 ${e16.toExponential(2)} > ${LOGITS_TOL} + HF's ` +
        `own bf16 error ${hf.toExponential(2)}`,
    );
  }
  const want = argmax(fp32), got = argmax(logits), margin = top2Margin(fp32);
  if (got !== want && margin > tie) {
    problems.push(
      `${p.name}: argmax ${got}, HF fp32 ${want} (fp32 top-2 margin ${margin.toFixed(3)} > ` +
        `near-tie width ${tie.toFixed(3)})`,
    );
  }
  return problems;
}

/** How a greedy continuation compared with HF's. */
export interface GreedyVerdict {
  /** Steps that were compared and equal before the comparison ended. */
  readonly equal: number;
  /** The step of a near tie that ended the comparison early, or null. */
  readonly tieAt: number | null;
  /** At tieAt: the fp32 maximum minus the fp32 logit of the engine's token. */
  readonly gap: number;
  /** Why the continuation fails, or null when it passes. */
  readonly problem: string | null;
}

/**
 * Judges `tokens` against HF's bf16 greedy continuation: equal up to the end, or up to a step
 * where the engine's token is within `tie` of the best fp32 logit given the (shared) prefix.
 */
export function judgeGreedy(
  p: ReferencePrompt,
  tokens: readonly number[],
  tie: number,
): GreedyVerdict {
  const want = p.greedy.bf16;
  if (tokens.length !== want.length) {
    return {
      equal: 0,
      tieAt: null,
      gap: 0,
      problem: `${p.name}: ${tokens.length} tokens generated, expected ${want.length}`,
    };
  }
  for (let t = 0; t < want.length; t++) {
    if (tokens[t] === want[t]) continue;
    const step = p.steps[t];
    const at = step.ids.indexOf(tokens[t]);
    const best = step.fp32[0];
    // Outside the stored top-k the gap is at least best − (k-th logit).
    const gap = at >= 0 ? best - step.fp32[at] : best - step.fp32[step.fp32.length - 1];
    const where = `${p.name} step ${t}: token ${tokens[t]}, HF bf16 ${want[t]}`;
    if (at >= 0 && gap <= tie) return { equal: t, tieAt: t, gap, problem: null };
    return {
      equal: t,
      tieAt: null,
      gap,
      problem: at >= 0
        ? `${where}; its fp32 logit is ${gap.toFixed(3)} below the best, more than the ` +
          `near-tie width ${tie.toFixed(3)}`
        : `${where}; not among HF fp32's top ${step.ids.length} (gap >= ${gap.toFixed(3)})`,
    };
  }
  return { equal: want.length, tieAt: null, gap: 0, problem: null };
}

/** A finished generation: its tokens, its streamed text and why it ended. */
export interface Generated {
  readonly tokens: number[];
  readonly text: string;
  readonly finishReason: string | undefined;
}

/** Greedy, EOS ignored, as the reference's generate() ran. */
function greedyParams(maxTokens: number) {
  return { maxTokens, temperature: 0, ignoreEos: true } as const;
}

/** Drains one generate() stream. */
export async function generate(
  engine: Engine,
  ids: readonly number[],
  maxTokens: number,
): Promise<Generated> {
  const tokens: number[] = [];
  let text = "", finishReason: string | undefined;
  for await (const chunk of engine.generate(ids, greedyParams(maxTokens))) {
    if (chunk.tokenId >= 0) tokens.push(chunk.tokenId);
    text += chunk.text;
    finishReason = chunk.finishReason ?? finishReason;
  }
  return { tokens, text, finishReason };
}

/**
 * Where `together` first differs from `alone` for one prompt, and whether that is a near tie
 * of the engine's own logits for the shared prefix (both tokens within `tie` of the maximum).
 */
async function batchProblem(
  engine: Engine,
  p: ReferencePrompt,
  alone: readonly number[],
  together: readonly number[],
  tie: number,
): Promise<{ problem: string | null; tieAt: number | null }> {
  if (together.length !== alone.length) {
    return {
      problem: `${p.name}: ${together.length} tokens in the batch, ${alone.length} alone`,
      tieAt: null,
    };
  }
  const t = alone.findIndex((id, i) => id !== together[i]);
  if (t < 0) return { problem: null, tieAt: null };
  const logits = await engine.lastLogits([...p.ids, ...alone.slice(0, t)]);
  const best = logits[argmax(logits)];
  const gapAlone = best - logits[alone[t]], gapTogether = best - logits[together[t]];
  if (gapAlone <= tie && gapTogether <= tie) return { problem: null, tieAt: t };
  return {
    problem: `${p.name} step ${t}: token ${together[t]} in the batch, ${alone[t]} alone; ` +
      `their logits are ${gapTogether.toFixed(3)} and ${gapAlone.toFixed(3)} below the best, ` +
      `beyond the near-tie width ${tie.toFixed(3)}`,
    tieAt: null,
  };
}

function failIf(problems: readonly string[], what: string): void {
  assert.ok(problems.length === 0, `${what}:\n  ${problems.join("\n  ")}`);
}

/** Engine options for these tests: the given backend, start-up lines kept quiet. */
function options(backend: "cpu" | "cuda", extra: EngineOptions = {}): EngineOptions {
  return { backend, log: () => {}, ...extra };
}

/** Last-position logits of every prompt, one request at a time. */
async function allLastLogits(engine: Engine, ref: Reference): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const p of ref.prompts) out.push(await engine.lastLogits(p.ids));
  return out;
}

/** Judges every continuation against HF and logs a one-line summary. */
function judgeAll(
  label: string,
  ref: Reference,
  results: readonly Generated[],
  tie: number,
): void {
  const problems: string[] = [], ties: string[] = [];
  let equal = 0;
  ref.prompts.forEach((p, i) => {
    const r = results[i];
    const verdict = judgeGreedy(p, r.tokens, tie);
    equal += verdict.equal;
    if (verdict.problem) problems.push(verdict.problem);
    if (verdict.tieAt !== null) {
      ties.push(`${p.name}@${verdict.tieAt} (gap ${verdict.gap.toFixed(3)})`);
    }
    if (r.finishReason !== "length") {
      problems.push(`${p.name}: finished with ${r.finishReason}, expected "length"`);
    }
  });
  const total = ref.prompts.length * ref.maxNewTokens;
  console.log(
    `${label}: ${equal}/${total} tokens equal to HF bf16 before the end or a near tie ` +
      `(width ${tie.toFixed(3)})${ties.length ? `; near ties: ${ties.join(", ")}` : ""}`,
  );
  failIf(problems, `${label}: greedy continuations differ from HF transformers`);
}

/**
 * Registers the parity tests for `backend`: a presence check of the Llama fixtures, then per
 * model one test on a default engine (chat template, prefix cache, tokenizer, logits, greedy,
 * text, batch) and one on an engine with a small token budget and KV cache (chunked prefill,
 * preemption). The other families' tests are skipped, with a line saying why, while their
 * fixtures are missing.
 */
export function registerParityTests(backend: "cpu" | "cuda", ignore: boolean): void {
  // The engine's backend (FFI handles) and its step loop outlive a test's sanitizer window.
  const base = { ignore, sanitizeResources: false, sanitizeOps: false };

  Deno.test({ ...base, name: `parity (${backend}): the fixture models are present` }, () => {
    const missing = PARITY_MODELS.filter((name) => {
      try {
        return !Deno.statSync(`${modelDir(name)}reference.json`).isFile;
      } catch {
        return true;
      }
    });
    assert.deepEqual(
      missing,
      [],
      `parity fixtures missing under ${FIXTURES_URL.pathname}: ${missing.join(", ")}; ${REMEDY}`,
    );
  });

  const present = (name: string) => {
    try {
      return Deno.statSync(`${modelDir(name)}reference.json`).isFile;
    } catch {
      return false;
    }
  };
  const optional = [...FAMILY_PARITY_MODELS, ...QUANTIZED_PARITY_MODELS];
  const absent = optional.filter((name) => !present(name));
  if (absent.length > 0 && !ignore) {
    console.log(
      `parity (${backend}): SKIPPED for ${absent.join(", ")}: their fixtures are not generated ` +
        `yet (${
          REMEDY.replace("make_fixtures.py", "make_fixtures.py --only " + absent.join(","))
        })`,
    );
  }
  const models = [
    ...PARITY_MODELS.map((name) => ({ name, skip: false })),
    ...optional.map((name) => ({ name, skip: !present(name) })),
  ];
  for (const { name, skip } of models) {
    const modelBase = { ...base, ignore: ignore || skip };
    Deno.test(
      { ...modelBase, name: `parity (${backend}): ${name} matches HF transformers` },
      async (t) => {
        const ref = await loadReference(name);
        const engine = await Engine.load(modelDir(name), options(backend));
        try {
          const logits = await allLastLogits(engine, ref);
          const tie = tieWidth(ref.prompts, logits);
          const alone: Generated[] = [];
          for (const p of ref.prompts) alone.push(await generate(engine, p.ids, ref.maxNewTokens));

          await t.step("the chat template renders as transformers renders it", () => {
            const tokenizer = engine.tokenizer!;
            for (const p of ref.prompts) {
              if (!p.messages || p.chatText === undefined) continue;
              const text = tokenizer.applyChatTemplate(p.messages, { addGenerationPrompt: true });
              assert.equal(text, p.chatText, `${name} ${p.name}: chat template rendering`);
            }
          });

          await t.step(
            "a repeated prompt from the prefix cache gives the same tokens",
            async () => {
              const p = ref.prompts.reduce((a, b) => (b.ids.length > a.ids.length ? b : a));
              const i = ref.prompts.indexOf(p);
              const before = engine.stats().prefixCacheHitRate;
              const again = await generate(engine, p.ids, ref.maxNewTokens);
              assert.ok(
                engine.stats().prefixCacheHitRate > before,
                `${name}: the repeated ${p.name} prompt found nothing in the prefix cache`,
              );
              const r = await batchProblem(engine, p, alone[i].tokens, again.tokens, tie);
              failIf(r.problem ? [r.problem] : [], `${name}: prefix-cached tokens differ`);
            },
          );

          await t.step("prompt ids equal the HF tokenizer's", () => {
            const tokenizer = engine.tokenizer;
            assert.ok(tokenizer !== null, `${name}: the engine loaded no tokenizer`);
            for (const p of ref.prompts) {
              const ids: number[] = p.messages
                ? tokenizer.encodeChat(p.messages, { addGenerationPrompt: true })
                : tokenizer.encode(p.text ?? "");
              assert.deepEqual(ids, p.ids, `${name} ${p.name}: token ids differ from HF's`);
            }
          });

          await t.step("last-position logits match HF to bf16 accuracy", () => {
            const problems = ref.prompts.flatMap((p, i) => logitsProblems(p, logits[i], tie));
            const errors = ref.prompts.map((p, i) =>
              `${p.name} ${relativeError(logits[i], p.logits.fp32).toExponential(1)}`
            );
            console.log(`${name}: relative error to HF fp32: ${errors.join(", ")}`);
            failIf(problems, `${name}: logits differ from HF transformers`);
          });

          await t.step("greedy continuations follow HF's bf16 generate()", () => {
            judgeAll(name, ref, alone, tie);
          });

          await t.step("streamed text equals the decoded tokens", () => {
            const tokenizer = engine.tokenizer!;
            ref.prompts.forEach((p, i) => {
              const r = alone[i];
              // HF's text is the reference where the tokens are HF's; past a near tie, the
              // engine's own tokenizer decodes the engine's tokens.
              const same = r.tokens.length === p.greedy.bf16.length &&
                r.tokens.every((id, k) => id === p.greedy.bf16[k]);
              const want = same
                ? p.greedy.textSkipSpecial
                : tokenizer.decode(r.tokens, { skipSpecialTokens: true });
              assert.equal(
                r.text,
                want,
                `${name} ${p.name}: streamed text differs from ${same ? "HF's" : "the"} decode`,
              );
            });
          });

          await t.step("the prompts batched together give the tokens of each alone", async () => {
            const before = engine.stats().steps;
            const together = await Promise.all(
              ref.prompts.map((p) => generate(engine, p.ids, ref.maxNewTokens)),
            );
            const steps = engine.stats().steps - before;
            const sequential = ref.prompts.length * ref.maxNewTokens;
            assert.ok(
              steps < sequential,
              `${name}: the batch took ${steps} steps, as many as ${sequential} sequential ` +
                `ones; the requests did not run together`,
            );
            const problems: string[] = [], ties: string[] = [];
            for (const [i, p] of ref.prompts.entries()) {
              const r = await batchProblem(engine, p, alone[i].tokens, together[i].tokens, tie);
              if (r.problem) problems.push(r.problem);
              if (r.tieAt !== null) ties.push(`${p.name}@${r.tieAt}`);
            }
            console.log(
              `${name}: batch of ${ref.prompts.length} in ${steps} steps` +
                (ties.length ? `; near ties: ${ties.join(", ")}` : ""),
            );
            failIf(problems, `${name}: batched tokens differ from each prompt alone`);
          });
        } finally {
          await engine.close();
        }
      },
    );

    Deno.test({
      ...modelBase,
      name: `parity (${backend}): ${name} follows HF under chunked prefill and KV pressure`,
    }, async () => {
      const ref = await loadReference(name);
      // 32 tokens a step splits the long prompts' prefill into chunks beside running decodes;
      // 12 blocks of 16 hold the longest sequence but not all five at once.
      const engine = await Engine.load(
        modelDir(name),
        options(backend, { maxRunning: 4, maxBatchedTokens: 32, kvBlocks: 12 }),
      );
      try {
        const tie = tieWidth(ref.prompts, await allLastLogits(engine, ref));
        const results = await Promise.all(
          ref.prompts.map((p) => generate(engine, p.ids, ref.maxNewTokens)),
        );
        const stats = engine.stats();
        console.log(
          `${name} (budget 32 tokens, 12 KV blocks): ${stats.steps} steps, ` +
            `${stats.preemptions} preemptions, ${stats.prefillTokens} prefill tokens`,
        );
        judgeAll(`${name} under pressure`, ref, results, tie);
      } finally {
        await engine.close();
      }
    });
  }
}
