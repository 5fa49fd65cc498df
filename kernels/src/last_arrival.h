// "The last block to arrive does the rest": the ticket protocol behind every cross-block sum
// without a second launch (split-K and stream-K GEMM tiles in linear_sm90.cu, decode attention's
// partitions in attention.cu). Each block writes its partial result, then takes a ticket from a
// counter shared by the `arrivals` blocks of one result; the block that takes the last ticket
// sums every partial (read through L2 with denali_ld_l2) and resets the counter to zero, so
// counters zeroed once when allocated survive graph replays. No block ever waits for another.
#pragma once
#include "compat.h"

// Publishes this block's partial (already written) and takes a ticket: true, in every thread of
// the block, for the block that takes the last of `arrivals`. The fences make each block's
// partial visible before its ticket, and every counted partial visible to the last block.
__device__ __forceinline__ bool last_arrival(uint32_t* __restrict__ counter, int arrivals) {
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == static_cast<uint32_t>(arrivals - 1);
  __syncthreads();
  if (last) __threadfence();
  return last;
}
