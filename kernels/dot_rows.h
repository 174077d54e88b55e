// The plain form of KernelSet::dot_rows_f32 (kernel_set.h) over a back-end's
// own dot_f32: one dot per (head, row). Each ISA file instantiates it with
// its own Dot, so the template never mixes instruction sets.
#pragma once

#include <cstdint>

namespace micromoe::kernels {

template <float (*Dot)(const float* a, const float* b, int64_t n)>
void DotRowsEach(const float* q, uint64_t ld_q, int n_q, const float* rows, uint64_t stride, int64_t n, int64_t dim,
                 float* out, uint64_t ld_out) {
  for (int h = 0; h < n_q; ++h) {
    for (int64_t t = 0; t < n; ++t) out[h * ld_out + t] = Dot(q + h * ld_q, rows + t * stride, dim);
  }
}

}  // namespace micromoe::kernels
