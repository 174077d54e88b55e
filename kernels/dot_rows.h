// Pieces of KernelSet::dot_rows_f32 / weighted_rows_f32 (kernel_set.h) that
// every back-end shares. Each ISA file instantiates them with its own
// functions, so the templates never mix instruction sets.

// The plain dot_rows_f32 over a back-end's own dot_f32: one dot per (head, row).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace micromoe::kernels {

template <float (*Dot)(const float* a, const float* b, int64_t n)>
void DotRowsEach(const float* q, uint64_t ld_q, int n_q, const float* rows, uint64_t stride, int64_t n, int64_t dim,
                 float* out, uint64_t ld_out) {
  for (int h = 0; h < n_q; ++h) {
    for (int64_t t = 0; t < n; ++t) out[h * ld_out + t] = Dot(q + h * ld_q, rows + t * stride, dim);
  }
}

// The attention kernels keep the sums of up to four query heads in
// registers: fn(std::integral_constant<int, k>(), h) for passes of k heads
// from head h, over n_q heads.
template <class Fn>
void ForEachHeadPass(int n_q, const Fn& fn) {
  for (int h = 0; h < n_q; h += 4) {
    switch (std::min(4, n_q - h)) {
      case 1: fn(std::integral_constant<int, 1>(), h); break;
      case 2: fn(std::integral_constant<int, 2>(), h); break;
      case 3: fn(std::integral_constant<int, 3>(), h); break;
      default: fn(std::integral_constant<int, 4>(), h); break;
    }
  }
}

}  // namespace micromoe::kernels
