// AVX-512 (F, BW, VL) kernels. This file alone is compiled with those flags;
// it is called only after cpuid says the CPU has them. Conversions without a
// wider form here reuse nothing from the AVX2 file: each ISA file stands alone.
#include <immintrin.h>

#include "kernels/cpu_features.h"
#include "kernels/kernel_set.h"
#include "kernels/quant.h"

namespace micromoe::kernels {
namespace {

float DotF32(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  acc0 = _mm512_add_ps(acc0, acc1);
  if (i + 16 <= n) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    i += 16;
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(acc0);
}

float DotF16F32(const void* w, const float* x, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(w);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i))), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i + 16))), _mm512_loadu_ps(x + i + 16), acc1);
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += _cvtsh_ss(h[i]) * x[i];
  return sum;
}

float DotBf16F32(const void* w, const float* x, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(w);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  auto widen = [](const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(widen(h + i), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(widen(h + i + 16), _mm512_loadu_ps(x + i + 16), acc1);
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(h[i]) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    sum += f * x[i];
  }
  return sum;
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

void F16ToF32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(s[i]);
}

void Bf16ToF32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
  for (; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    dst[i] = f;
  }
}

void Q8_0ToF32(const void* src, float* dst, int64_t n) {
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(b[i].d));
    for (int j = 0; j < kQK; j += 16) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + j));
      _mm512_storeu_ps(dst + i * kQK + j, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))));
    }
  }
}

void Q4_0ToF32(const void* src, float* dst, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(src);
  const __m128i low_mask = _mm_set1_epi8(0x0F);
  const __m128i eight = _mm_set1_epi8(8);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(b[i].d));
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(packed, low_mask), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(packed, 4), low_mask), eight);
    _mm512_storeu_ps(dst + i * kQK, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo))));
    _mm512_storeu_ps(dst + i * kQK + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi))));
  }
}

#define MICROMOE_DPBUSD(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#include "kernels/int_dot_avx2.inc"
#undef MICROMOE_DPBUSD

// Packed groups (packed.h): each 64-byte chunk holds four weights of each of
// 16 rows; dpbusd against the matching four activation bytes, broadcast,
// adds one row's products per lane. The unsigned weights carry an offset,
// removed per block with the precomputed C * sum(codes): lane i gets
// d_w[i] * d_x * (dot - C * sum).
// Software prefetch distance: with it, streaming a packed Q4_0 matrix from
// memory went from 0.47 to 0.8-0.9 of the read bandwidth (kernels_bench
// matmul_packed, 1 thread; 1024 to 16384 bytes tried, 8192 best).
constexpr int kPrefetchBytes = 8192;

template <int kRows, bool kQ4>
void GemmX16Rows(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
                 uint64_t terms_stride, float* out) {
  constexpr int kChunkBytes = (kQ4 ? 4 : 8) * 64;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(group + nb * kChunkBytes);
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  __m512 acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* q = group + b * kChunkBytes;
    for (int k = 0; k < kChunkBytes; k += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes + k), _MM_HINT_T0);
    }
    __m512i w[8];
    if constexpr (kQ4) {
      for (int k = 0; k < 4; ++k) {
        const __m512i v = _mm512_load_si512(q + k * 64);
        w[k] = _mm512_and_si512(v, low_mask);
        w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low_mask);
      }
    } else {
      for (int k = 0; k < 8; ++k) w[k] = _mm512_load_si512(q + k * 64);
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + b * 16)));
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* x = xq + r * xq_stride + b * sizeof(BlockQ8_0) + 2;
      auto bcast = [&](int k) {
        int32_t v;
        __builtin_memcpy(&v, x + 4 * k, 4);
        return _mm512_set1_epi32(v);
      };
      // Two chains, so consecutive dpbusd do not wait on each other.
      __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], bcast(0));
      __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[1], bcast(1));
      for (int k = 2; k < 8; k += 2) {
        s0 = _mm512_dpbusd_epi32(s0, w[k], bcast(k));
        s1 = _mm512_dpbusd_epi32(s1, w[k + 1], bcast(k + 1));
      }
      const float* t = terms + r * terms_stride + 2 * b;
      const __m512 dot = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_set1_ps(t[1]));
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dot, _mm512_set1_ps(t[0])), dw, acc[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(out + r * 16, acc[r]);
}

template <bool kQ4>
void GemmX16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
             uint64_t terms_stride, int n_x, float* out) {
  switch (n_x) {
    case 1: return GemmX16Rows<1, kQ4>(group, nb, xq, xq_stride, terms, terms_stride, out);
    case 2: return GemmX16Rows<2, kQ4>(group, nb, xq, xq_stride, terms, terms_stride, out);
    case 3: return GemmX16Rows<3, kQ4>(group, nb, xq, xq_stride, terms, terms_stride, out);
    default: return GemmX16Rows<4, kQ4>(group, nb, xq, xq_stride, terms, terms_stride, out);
  }
}

}  // namespace

const KernelSet* Avx512Kernels() {
  static const KernelSet set = {"avx512", DotF32, DotF16F32, DotBf16F32, AxpyF32, F16ToF32, Bf16ToF32, Q8_0ToF32, Q4_0ToF32,
                                QuantizeQ8_0, DotQ8_0Q8_0, DotQ4_0Q8_0, Dot4Q8_0Q8_0, Dot4Q4_0Q8_0,
                                GemmX16<false>, GemmX16<true>};
  const CpuFeatures& f = GetCpuFeatures();
  return (f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.f16c) ? &set : nullptr;
}

}  // namespace micromoe::kernels
