// F32 -> weight-type conversion of rows (the inverse of DequantizeRow), used to
// write model files. Rounding follows the reference quantizers of GGUF engines;
// the K-quants search their scales as those do (see quantize.cc):
//   Q4_K / Q5_K: per 32 values a scale and an offset (x ~ scale * q - offset,
//     q in [0, 15] / [0, 31]) fitted by least squares around the min/max grid,
//     stored as 6-bit multiples of the 256-block's fp16 d and dmin;
//   Q6_K: per 16 values a signed scale (x ~ scale * q, q in [-32, 31]) stored as
//     an int8 multiple of the 256-block's fp16 d.
// Each block is encoded from its own values only. Finite input gives finite
// output; magnitudes past what the fp16 scales can hold saturate.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "gguf/types.h"

namespace micromoe::kernels {

// Whether QuantizeRow can produce `type`.
bool CanQuantizeTo(gguf::TensorType type);

// Encodes n floats (a multiple of the type's block size: 256 for the
// K-quants, 32 for the others) into dst, which must hold n / block_elements *
// block_bytes bytes. Thread-safe (no shared state).
void QuantizeRow(gguf::TensorType type, const float* src, void* dst, int64_t n);

// Encodes a whole tensor of n_rows rows of n_cols floats.
std::vector<uint8_t> QuantizeTensor(gguf::TensorType type, const float* src, int64_t n_rows, int64_t n_cols);

}  // namespace micromoe::kernels
