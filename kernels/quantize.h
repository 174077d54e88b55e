// F32 -> weight-type conversion of rows (the inverse of DequantizeRow), used to
// write model files. Rounding follows the reference quantizers of GGUF engines.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "gguf/types.h"

namespace micromoe::kernels {

// Whether QuantizeRow can produce `type`.
bool CanQuantizeTo(gguf::TensorType type);

// Encodes n floats (a multiple of the type's block size) into dst, which must
// hold n / block_elements * block_bytes bytes.
void QuantizeRow(gguf::TensorType type, const float* src, void* dst, int64_t n);

// Encodes a whole tensor of n_rows rows of n_cols floats.
std::vector<uint8_t> QuantizeTensor(gguf::TensorType type, const float* src, int64_t n_rows, int64_t n_cols);

}  // namespace micromoe::kernels
