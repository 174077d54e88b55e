// Public kernel entry points: weight-row conversion and matrix products over a
// range of output rows. Back-end chosen once from the CPU's features; callers
// split work across threads themselves (kernels know nothing of threads).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "base/scratch.h"
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
  // Rows [0, packed_rows) also in the packed layout (see packed.h), one group
  // of 16 rows every packed_group_bytes; nullptr when not packed.
  const uint8_t* packed = nullptr;
  int64_t packed_rows = 0;
  uint64_t packed_group_bytes = 0;

  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes; }
};

// Whether the kernels can compute with weights of `type`.
bool IsSupportedWeightType(gguf::TensorType type);

// The back-end for this CPU (best available), chosen on first call.
const KernelSet& Active();

// Converts `n` elements of one row of `type` to F32 (n a multiple of the block size).
void DequantizeRow(gguf::TensorType type, const void* src, float* dst, int64_t n,
                   const KernelSet& ks = Active());

// Activation rows in the form a weight type's dot product reads: F32 rows as
// given, or rows quantized once so integer dot products run on both sides:
// to Q8_0 blocks for the 32-element types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// IQ4_NL), to Q8_K blocks for the K-quants (Q2_K to Q6_K). For BF16 weights
// the rows are rounded to BF16 (nearest even), as the BF16 dot-product
// instructions (AVX512-BF16, AMX-BF16) take them and as llama.cpp does on
// CPUs, on every back-end, so that results do not depend on the CPU beyond
// the order of the float sums: f32_row then gives the rounded values and
// bf16_row their codes. Prepare once per matrix product.
class Activations {
 public:
  // x: n_x rows of `cols` floats with row stride ldx; must outlive this object.
  void Prepare(gguf::TensorType weight_type, const float* x, int64_t ldx, int64_t n_x, int64_t cols,
               const KernelSet& ks = Active());
  int64_t n_rows() const { return n_x_; }
  bool quantized() const { return quantized_; }
  const float* f32_row(int64_t r) const { return x_ + r * ldx_; }
  int64_t f32_stride() const { return ldx_; }
  const void* q8_row(int64_t r) const { return q8_.data() + r * q8_row_bytes_; }
  uint64_t q8_row_bytes() const { return q8_row_bytes_; }
  // Per block of each Q8_0 row, {d, C * sum of codes} for the packed kernels.
  const float* terms_row(int64_t r) const { return terms_.data() + r * terms_stride_; }
  uint64_t terms_stride() const { return terms_stride_; }
  const uint16_t* bf16_row(int64_t r) const { return bf16_.data() + r * ldx_; }
  // The weight type Prepare was called for.
  gguf::TensorType weight_type() const { return weight_type_; }

 private:
  gguf::TensorType weight_type_ = gguf::TensorType::kF32;
  const float* x_ = nullptr;
  int64_t ldx_ = 0, n_x_ = 0;
  uint64_t q8_row_bytes_ = 0;
  uint64_t terms_stride_ = 0;
  bool quantized_ = false;
  Scratch<uint8_t> q8_;
  Scratch<float> terms_;
  Scratch<float> rounded_;
  Scratch<uint16_t> bf16_;
};

// For o in [o_begin, o_end) and r in [0, x.n_rows()): y[r * ldy + o] = dot(W row o, x row r).
// `x` must have been prepared for w.type with w.cols columns.
void MatMulRows(const MatrixView& w, const Activations& x, float* y, int64_t ldy, int64_t o_begin,
                int64_t o_end, const KernelSet& ks = Active());

// Single-threaded convenience: the whole product y = W x for n_x rows.
void MatMul(const MatrixView& w, const float* x, int64_t ldx, int64_t n_x, float* y, int64_t ldy,
            const KernelSet& ks = Active());

}  // namespace micromoe::kernels
