/**
 * Server metrics in the Prometheus text format: request counts by endpoint and status, token
 * counters, time-to-first-token and inter-token latency histograms, and the engine's gauges.
 *
 * @module
 */

import type { EngineStats } from "../engine/engine.ts";

const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** A cumulative histogram with fixed upper bounds, in seconds. */
class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length).fill(0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    for (let i = 0; i < this.bounds.length; i++) {
      if (value <= this.bounds[i]) this.counts[i]++;
    }
  }

  render(name: string, help: string): string {
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    for (let i = 0; i < this.bounds.length; i++) {
      lines.push(`${name}_bucket{le="${this.bounds[i]}"} ${this.counts[i]}`);
    }
    lines.push(`${name}_bucket{le="+Inf"} ${this.count}`);
    lines.push(`${name}_sum ${this.sum}`, `${name}_count ${this.count}`);
    return lines.join("\n");
  }
}

/** The server's counters; `render` adds the engine's gauges at scrape time. */
export class Metrics {
  readonly #requests = new Map<string, number>();
  promptTokens = 0;
  completionTokens = 0;
  readonly ttft: Histogram = new Histogram(TTFT_BUCKETS);
  readonly itl: Histogram = new Histogram(ITL_BUCKETS);

  /** Counts one finished request on `endpoint` with `status`. */
  countRequest(endpoint: string, status: number): void {
    const key = `endpoint="${endpoint}",status="${status}"`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /** The Prometheus text exposition of the counters and of `stats`. */
  render(stats: EngineStats): string {
    const out: string[] = [
      "# HELP denali_requests_total HTTP requests by endpoint and status.",
      "# TYPE denali_requests_total counter",
    ];
    for (const [labels, n] of this.#requests) out.push(`denali_requests_total{${labels}} ${n}`);
    const scalar = (name: string, type: string, help: string, value: number) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
    scalar(
      "denali_prompt_tokens_total",
      "counter",
      "Prompt tokens of accepted requests.",
      this.promptTokens,
    );
    scalar(
      "denali_completion_tokens_total",
      "counter",
      "Tokens generated for requests.",
      this.completionTokens,
    );
    out.push(this.ttft.render("denali_time_to_first_token_seconds", "Time to first token."));
    out.push(this.itl.render("denali_inter_token_latency_seconds", "Time between tokens."));
    scalar("denali_requests_running", "gauge", "Sequences running.", stats.running);
    scalar("denali_requests_waiting", "gauge", "Sequences waiting.", stats.waiting);
    scalar("denali_kv_cache_usage_ratio", "gauge", "Fraction of KV blocks in use.", stats.kvUsage);
    scalar("denali_kv_cache_blocks_used", "gauge", "KV blocks in use.", stats.kvBlocksUsed);
    scalar("denali_kv_cache_blocks_total", "gauge", "KV blocks in the pool.", stats.kvBlocksTotal);
    scalar("denali_preemptions_total", "counter", "Preemptions.", stats.preemptions);
    scalar(
      "denali_prefix_cache_hit_ratio",
      "gauge",
      "Prompt tokens served from the prefix cache.",
      stats.prefixCacheHitRate,
    );
    scalar("denali_engine_steps_total", "counter", "Engine steps.", stats.steps);
    return out.join("\n") + "\n";
  }
}
