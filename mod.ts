/**
 * Denali: an LLM inference engine for Deno that talks to the GPU driver directly.
 *
 * This module is the public API. Generate text with an {@link Engine} (a Hugging Face Llama
 * directory on CUDA, HIP or the CPU); underneath, open a backend, load kernel modules, and launch
 * kernels through launchers generated once per signature.
 *
 * @example Generate text with the Engine
 * ```ts
 * import { Engine } from "./mod.ts";
 * // Any Hugging Face Llama directory; this one is the tiny random-weight model of the repository.
 * const engine = await Engine.load("checkpoints/tiny-llama", { backend: "cpu", log: () => {} });
 * let text = "";
 * for await (const chunk of engine.generate("Hello", { maxTokens: 8, temperature: 0 })) {
 *   text += chunk.text; // or stream it: chunk.finishReason is set on the last one
 * }
 * await engine.close();
 * ```
 *
 * @example Pick a device and copy memory through it
 * ```ts
 * import { openBackend } from "./mod.ts";
 * const backend = openBackend("auto"); // cuda, then hip, then cpu
 * const buf = backend.alloc(16);
 * backend.copyToDevice(buf, new Float32Array([1, 2, 3, 4]));
 * const back = new Float32Array(4);
 * backend.copyToHost(back, buf);
 * backend.free(buf);
 * backend.close();
 * ```
 *
 * @example Launch a kernel through its generated launcher (needs a GPU)
 * ```ts ignore
 * import { loadKernels, openBackend } from "./mod.ts";
 * const gpu = openBackend("cuda");
 * const kernels = await loadKernels(gpu, "runtime_test");
 * const stream = gpu.createStream();
 * const [a, b, c] = [0, 1, 2].map(() => gpu.alloc(4 * 1024));
 * kernels.launchers.vec_add_f32.launch(4, 1, 1, 256, 1, 1, 0, stream, a, b, c, 1024);
 * stream.synchronize();
 * ```
 *
 * @example Compile a kernel at run time and launch it like Denali's own (needs a GPU and NVRTC)
 * ```ts ignore
 * import { compileKernels, openBackend } from "./mod.ts";
 * const gpu = openBackend("cuda");
 * const mod = await compileKernels(gpu, `
 *   extern "C" __global__ void scale(float* x, float a, int n) {
 *     int i = blockIdx.x * blockDim.x + threadIdx.x;
 *     if (i < n) x[i] *= a;
 *   }`, { name: "my_ops", arch: "auto" });
 * const x = gpu.alloc(4 * 1024), stream = gpu.createStream();
 * mod.launchers.scale.launch(4, 1, 1, 256, 1, 1, 0, stream, x, 2, 1024);
 * stream.synchronize();
 * ```
 *
 * @module
 */

export type {
  Backend,
  BackendKind,
  DeviceEvent,
  DeviceGraph,
  DeviceInfo,
  DeviceModule,
  GemmAccelerator,
  HostBuffer,
  KernelFunction,
  LaunchAbi,
  ModuleImage,
  ScaledFp8,
  Stream,
} from "./backends/backend.ts";
export { DeviceBuffer } from "./backends/backend.ts";
export type {
  AttentionShape,
  AwqWeight,
  DecodeAttentionArgs,
  Fp8Weight,
  KvCacheDtype,
  KvCacheWrite,
  LinearWeight,
  ModelOps,
  PrefillAttentionArgs,
  QkvRopeArgs,
  RopeTable,
  SamplingBuffers,
} from "./ops/ops.ts";
export { loadOps } from "./ops/load.ts";
export { decodeBf16, encodeBf16, fromBf16Bits, roundBf16, toBf16Bits } from "./backends/bf16.ts";
export { decodeE4m3, E4M3_MAX, encodeE4m3, fromE4m3Bits, toE4m3Bits } from "./backends/fp8.ts";
export { isAwqWeight, isFp8Weight, weightRows } from "./ops/linear_weight.ts";
export {
  DriverError,
  DriverNotFoundError,
  LaunchArgumentError,
  ModuleLoadError,
  NoDeviceError,
  UnsupportedShapeError,
} from "./backends/errors.ts";
export { reportFallback, setFallbackSink } from "./backends/fallbacks.ts";
export {
  AUTO_ORDER,
  type BackendChoice,
  openBackend,
  type OpenBackendOptions,
} from "./backends/select.ts";
export { type CudaOptions, openCuda } from "./backends/cuda.ts";
export { type HipOptions, openHip } from "./backends/hip.ts";
export { CpuBackend } from "./backends/cpu.ts";
export { GpuBackend } from "./backends/gpu_backend.ts";
export {
  type ArgumentPacking,
  type CheckLevel,
  createLauncher,
  type KernelLauncher,
  type Launcher,
  type LauncherOptions,
  type LoadedVariant,
} from "./kernels/launcher.ts";
export { imagePath, type LoadedKernels, loadKernels } from "./kernels/modules.ts";
export {
  type CompiledKernels,
  compileKernels,
  type CompileKernelsOptions,
  defaultKernelCacheDir,
  KernelSourceError,
  type PrecompiledKernels,
} from "./kernels/compile.ts";
export {
  CompileError,
  openRuntimeCompiler,
  RtcError,
  type RtcOutput,
  RuntimeCompiler,
  type RuntimeCompilerOptions,
} from "./backends/rtc.ts";
export {
  type Assumption,
  type KernelParam,
  type KernelSignature,
  type KernelSpec,
  type ParamType,
  parseKernels,
  type VariantSpec,
} from "./kernels/signature.ts";
export { KERNEL_MODULES } from "./kernels/manifest.ts";
export {
  Engine,
  type EngineInfo,
  type EngineOptions,
  type EngineStats,
  type GenerationChunk,
  type RandomWeightsSource,
} from "./engine/engine.ts";
export { type KvCacheDtypeOption, resolveKvCacheDtype } from "./engine/kv_cache.ts";
export {
  type Architecture,
  ARCHITECTURES,
  type CheckpointDtype,
  ConfigError,
  type Fp8Checkpoint,
  type Int4Checkpoint,
  loadModelConfig,
  type ModelConfig,
  parseModelConfig,
} from "./models/config.ts";
export type { Llama3RopeScaling } from "./models/rope.ts";
export type {
  Forward,
  ForwardSizes,
  LayerCaches,
  LinearShape,
  LogitsOut,
  ModelDefinition,
  ModelWeights,
  StepInputs,
  StepShape,
  WeightPart,
  WeightSlot,
} from "./models/model.ts";
export { MODEL_FAMILIES, modelDefinition } from "./models/families.ts";
export { type WeightQuantization, WeightsError } from "./models/weights.ts";
export { SafetensorsError } from "./models/safetensors.ts";
export {
  DECODE_ORDERS,
  type DecodeOrder,
  RequestRejectedError,
  type SchedulerMetrics,
} from "./engine/scheduler.ts";
export { PreparedPrompt, type Prompt, PromptError, type PromptProblem } from "./engine/prompt.ts";
export type { LogprobEntry } from "./engine/request_text.ts";
export type { PromptTokenLogprobs } from "./engine/prompt_logprobs.ts";
export { TokenTexts } from "./engine/token_texts.ts";
export {
  type CompiledSpec,
  GrammarCompiler,
  GrammarError,
  type GrammarStats,
} from "./engine/grammar/compiler.ts";
export { GrammarState } from "./engine/grammar/state.ts";
export type { CompiledGrammar, GrammarMatcher } from "./engine/grammar/xgrammar.ts";
export {
  choiceSpec,
  ebnfSpec,
  type GrammarSpec,
  jsonSchemaSpec,
  jsonSpec,
  regexSpec,
  structuralTagSpec,
} from "./engine/grammar/spec.ts";
export {
  type ChatMessage,
  ChatTemplateError,
  type ChatTemplateOptions,
  type DecodeOptions,
  type EncodeOptions,
  Tokenizer,
  TokenizerError,
  type TokenizerFiles,
} from "./engine/tokenizer.ts";
export type { TokenLogprobs } from "./engine/sampler.ts";
export {
  formatSummary,
  type KindTotals,
  type StepColumns,
  stepColumns,
  type StepKind,
  type StepProfileData,
  type StepSummary,
  summarizeSteps,
} from "./engine/step_profile.ts";
export {
  type DeviceCeilings,
  type ModelCost,
  phasedBoundMs,
  prefillChunkWork,
  rooflineMs,
  type StepCost,
  stepCost,
  type StepWork,
  transformerCost,
  type TransformerShape,
} from "./engine/roofline.ts";
export { type BatchLimits, batchLimits } from "./engine/batch_limits.ts";
export {
  hostLogitsProcessor,
  kernelLogitsProcessor,
  type KernelProcessorOptions,
  type LogitsProcessor,
  type LogitsRows,
} from "./engine/logits_processors.ts";
export type {
  FinishReason,
  LogitEdits,
  SamplingParams,
  Sequence,
  SequenceStatus,
  TokenBitmaskFiller,
} from "./engine/sequence.ts";
