// Public kernel entry points: weight-row conversion and matrix products over a
// range of output rows. Back-end chosen once from the CPU's features; callers
// split work across threads themselves (kernels know nothing of threads).
#pragma once

#include <cstdint>
#include <string_view>

#include "gguf/types.h"
#include "kernels/kernel_set.h"

namespace micromoe::kernels {

// A row-major weight matrix in the mapping: `rows` rows of `cols` elements of `type`.
struct MatrixView {
  gguf::TensorType type = gguf::TensorType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  uint64_t row_bytes = 0;

  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes; }
};

// Whether the kernels can compute with weights of `type`.
bool IsSupportedWeightType(gguf::TensorType type);

// The back-end for this CPU (best available), chosen on first call.
const KernelSet& Active();

// Converts `n` elements of one row of `type` to F32 (n a multiple of the block size).
void DequantizeRow(gguf::TensorType type, const void* src, float* dst, int64_t n,
                   const KernelSet& ks = Active());

// For o in [o_begin, o_end) and r in [0, n_x): y[r * ldy + o] = dot(W row o, x + r * ldx).
// Needs x rows of w.cols elements.
void MatMulRows(const MatrixView& w, const float* x, int64_t ldx, int64_t n_x, float* y,
                int64_t ldy, int64_t o_begin, int64_t o_end, const KernelSet& ks = Active());

}  // namespace micromoe::kernels
