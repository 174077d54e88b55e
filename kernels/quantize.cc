#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernel_set.h"
#include "kernels/quant.h"

namespace micromoe::kernels {

using gguf::TensorType;

bool CanQuantizeTo(TensorType type) {
  switch (type) {
    case TensorType::kF32: case TensorType::kF16: case TensorType::kBF16:
    case TensorType::kQ8_0: case TensorType::kQ4_0:
      return true;
    default:
      return false;
  }
}

void QuantizeRow(TensorType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      break;
    case TensorType::kF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToFp16(src[i]);
      break;
    }
    case TensorType::kBF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToBf16(src[i]);
      break;
    }
    case TensorType::kQ8_0:
      ScalarKernels().quantize_q8_0(src, dst, n);  // the same rounding as activations get
      break;
    case TensorType::kQ4_0: {
      BlockQ4_0* b = static_cast<BlockQ4_0*>(dst);
      for (int64_t i = 0; i < n / kQK; ++i) {
        const float* x = src + i * kQK;
        float amax = 0, max = 0;  // max keeps the sign of the largest magnitude
        for (int j = 0; j < kQK; ++j) {
          if (std::fabs(x[j]) > amax) {
            amax = std::fabs(x[j]);
            max = x[j];
          }
        }
        const float d = max / -8.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = Fp32ToFp16(d);
        for (int j = 0; j < kQK / 2; ++j) {
          const uint8_t lo = static_cast<uint8_t>(std::min(15, static_cast<int>(x[j] * id + 8.5f)));
          const uint8_t hi = static_cast<uint8_t>(std::min(15, static_cast<int>(x[j + kQK / 2] * id + 8.5f)));
          b[i].qs[j] = lo | (hi << 4);
        }
      }
      break;
    }
    default:
      break;  // callers check CanQuantizeTo first
  }
}

std::vector<uint8_t> QuantizeTensor(TensorType type, const float* src, int64_t n_rows, int64_t n_cols) {
  const gguf::TypeTraits* t = gguf::FindTypeTraits(static_cast<uint32_t>(type));
  const uint64_t row_bytes = n_cols / t->block_elements * t->block_bytes;
  std::vector<uint8_t> out(row_bytes * n_rows);
  for (int64_t r = 0; r < n_rows; ++r) QuantizeRow(type, src + r * n_cols, out.data() + r * row_bytes, n_cols);
  return out;
}

}  // namespace micromoe::kernels
