// Scalar reference kernels: the definition every vector back-end is tested against.
#include <algorithm>
#include <cmath>

#include "kernels/kernel_set.h"
#include "kernels/quant.h"

namespace micromoe::kernels {
namespace {

float DotF32(const float* a, const float* b, int64_t n) {
  double sum = 0;  // double accumulation: the reference should not be the noisy one
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(sum);
}

float DotF16F32(const void* w, const float* x, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(w);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(Fp16ToFp32(h[i])) * x[i];
  return static_cast<float>(sum);
}

float DotBf16F32(const void* w, const float* x, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(w);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(Bf16ToFp32(h[i])) * x[i];
  return static_cast<float>(sum);
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void F16ToF32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(s[i]);
}

void Bf16ToF32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(s[i]);
}

void Q8_0ToF32(const void* src, float* dst, int64_t n) {
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = Fp16ToFp32(b[i].d);
    for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * b[i].qs[j];
  }
}

void Q4_0ToF32(const void* src, float* dst, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = Fp16ToFp32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      dst[i * kQK + j] = d * ((b[i].qs[j] & 0x0F) - 8);
      dst[i * kQK + j + kQK / 2] = d * ((b[i].qs[j] >> 4) - 8);
    }
  }
}

void QuantizeQ8_0(const float* src, void* dst, int64_t n) {
  BlockQ8_0* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* x = src + i * kQK;
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = Fp32ToFp16(d);
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
  }
}

float DotQ8_0Q8_0(const void* w, const void* x, int64_t n) {
  const BlockQ8_0* a = static_cast<const BlockQ8_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQK; ++j) s += a[i].qs[j] * b[i].qs[j];
    sum += s * Fp16ToFp32(a[i].d) * Fp16ToFp32(b[i].d);
  }
  return sum;
}

float DotQ4_0Q8_0(const void* w, const void* x, int64_t n) {
  const BlockQ4_0* a = static_cast<const BlockQ4_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      s += ((a[i].qs[j] & 0x0F) - 8) * b[i].qs[j];
      s += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + kQK / 2];
    }
    sum += s * Fp16ToFp32(a[i].d) * Fp16ToFp32(b[i].d);
  }
  return sum;
}

void Dot4Q8_0Q8_0(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  for (int i = 0; i < 4; ++i) out[i] = DotQ8_0Q8_0(w, static_cast<const uint8_t*>(x) + i * x_stride, n);
}

void Dot4Q4_0Q8_0(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  for (int i = 0; i < 4; ++i) out[i] = DotQ4_0Q8_0(w, static_cast<const uint8_t*>(x) + i * x_stride, n);
}

// The packed layout read element by element (packed.h), with the same
// per-block arithmetic as the unpacked dot products above.
template <bool kQ4>
void GemmX16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* /*terms*/,
             uint64_t /*terms_stride*/, int n_x, float* out) {
  const int chunk_bytes = (kQ4 ? 4 : 8) * 64;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(group + nb * chunk_bytes);
  auto weight = [&](int64_t b, int row, int e) {
    const uint8_t* q = group + b * chunk_bytes;
    if (!kQ4) return static_cast<int>(q[(e / 4) * 64 + row * 4 + e % 4]) - 128;
    const int j = e % 16;  // the nibble byte holding element e
    const uint8_t v = q[(j / 4) * 64 + row * 4 + j % 4];
    return (e < 16 ? (v & 0x0F) : (v >> 4)) - 8;
  };
  for (int r = 0; r < n_x; ++r) {
    const BlockQ8_0* x = reinterpret_cast<const BlockQ8_0*>(xq + r * xq_stride);
    for (int row = 0; row < 16; ++row) {
      float sum = 0;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t s = 0;
        for (int e = 0; e < kQK; ++e) s += weight(b, row, e) * x[b].qs[e];
        sum += s * Fp16ToFp32(scales[b * 16 + row]) * Fp16ToFp32(x[b].d);
      }
      out[r * 16 + row] = sum;
    }
  }
}

}  // namespace

const KernelSet& ScalarKernels() {
  static const KernelSet set = {"scalar", DotF32, DotF16F32, DotBf16F32, AxpyF32, F16ToF32, Bf16ToF32, Q8_0ToF32, Q4_0ToF32,
                                QuantizeQ8_0, DotQ8_0Q8_0, DotQ4_0Q8_0, Dot4Q8_0Q8_0, Dot4Q4_0Q8_0,
                                GemmX16<false>, GemmX16<true>};
  return set;
}

}  // namespace micromoe::kernels
