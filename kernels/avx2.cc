// AVX2 + FMA + F16C kernels. This file alone is compiled with those flags;
// it is called only after cpuid says the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu_features.h"
#include "kernels/dot_rows.h"
#include "kernels/kernel_set.h"
#include "kernels/quant.h"

namespace micromoe::kernels {
namespace {

float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}

float DotF32(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float sum = HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

float DotF16F32(const void* w, const float* x, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i + 8))), _mm256_loadu_ps(x + i + 8), acc1);
  }
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += _cvtsh_ss(h[i]) * x[i];
  return sum;
}

float DotBf16F32(const void* w, const float* x, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  auto widen = [](const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(widen(h + i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(widen(h + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
  }
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(h[i]) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    sum += f * x[i];
  }
  return sum;
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

void F16ToF32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(s[i]);
}

void Bf16ToF32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
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
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
    for (int j = 0; j < kQK; j += 8) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + j));
      _mm256_storeu_ps(dst + i * kQK + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    }
  }
}

void Q4_0ToF32(const void* src, float* dst, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(src);
  const __m128i low_mask = _mm_set1_epi8(0x0F);
  const __m128i eight = _mm_set1_epi8(8);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(packed, low_mask), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(packed, 4), low_mask), eight);
    float* out = dst + i * kQK;
    _mm256_storeu_ps(out + 0, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
    _mm256_storeu_ps(out + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
    _mm256_storeu_ps(out + 16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
    _mm256_storeu_ps(out + 24, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
  }
}

#define MICROMOE_DPBUSD(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#include "kernels/int_dot_avx2.inc"
#undef MICROMOE_DPBUSD

// K-quant weights against Q8_K activations. The quants are unsigned (Q4_K
// 0..15, Q5_K 0..31, Q6_K 0..63 = value + 32), so maddubs multiplies them
// with the int8 activations directly (pair sums stay within int16) and madd
// applies each sub-block's int16 scale; the offsets (Q4_K/Q5_K mins, Q6_K's
// -32) come from the activations' bsums once per super-block. One weight
// block is unpacked once for kRows activation rows.

template <typename Block, int kRows>
void DotK4Rows(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  constexpr bool kQ5 = std::is_same_v<Block, BlockQ5_K>;
  const Block* a = static_cast<const Block*>(w);
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i fifth_bit = _mm256_set1_epi8(0x10);
  __m256 acc[kRows], acc_min[kRows];
  for (int r = 0; r < kRows; ++r) {
    acc[r] = _mm256_setzero_ps();
    acc_min[r] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m128i scales_mins = ScalesMinsK4(a[i].scales);
    // 8 int16 scales in each 128-bit lane, picked per sub-block by shuffles.
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales_mins));
    // Each min twice, against the two bsums (of 16) of its sub-block.
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scales_mins, scales_mins));
    __m256i high_bits = _mm256_setzero_si256();
    if constexpr (kQ5) high_bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh));
    __m256i sums[kRows];
    for (int r = 0; r < kRows; ++r) sums[r] = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {  // 64 elements: sub-blocks 2j (low nibbles) and 2j + 1 (high)
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs + 32 * j));
      __m256i lo = _mm256_and_si256(q, low_mask);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low_mask);
      if constexpr (kQ5) {  // fifth bits 2j and 2j + 1 of qh; high_bits moves down 2 per step
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(high_bits, 4), fifth_bit));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(high_bits, 3), fifth_bit));
        high_bits = _mm256_srli_epi16(high_bits, 2);
      }
      // Bytes 2k, 2k + 1 of each lane: int16 scale k.
      const __m256i scale_lo = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>(0x0100 + 0x0404 * j)));
      const __m256i scale_hi = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>(0x0302 + 0x0404 * j)));
      for (int r = 0; r < kRows; ++r) {
        const int8_t* xq = Q8_KRow(x, x_stride, r)[i].qs + 64 * j;
        const __m256i x_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
        const __m256i x_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32));
        const __m256i p_lo = _mm256_madd_epi16(scale_lo, _mm256_maddubs_epi16(lo, x_lo));
        const __m256i p_hi = _mm256_madd_epi16(scale_hi, _mm256_maddubs_epi16(hi, x_hi));
        sums[r] = _mm256_add_epi32(sums[r], _mm256_add_epi32(p_lo, p_hi));
      }
    }
    // d and dmin (adjacent fp16) converted together.
    uint32_t d_dmin;
    __builtin_memcpy(&d_dmin, &a[i].d, 4);
    const __m128 dw_dmin = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(d_dmin)));
    for (int r = 0; r < kRows; ++r) {
      const BlockQ8_K& xb = Q8_KRow(x, x_stride, r)[i];
      const __m256 scaled = _mm256_castps128_ps256(_mm_mul_ps(dw_dmin, _mm_set1_ps(xb.d)));
      acc[r] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(scaled, _mm256_setzero_si256()), _mm256_cvtepi32_ps(sums[r]),
                               acc[r]);
      const __m256i min_terms = _mm256_madd_epi16(mins, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.bsums)));
      acc_min[r] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(scaled, _mm256_set1_epi32(1)), _mm256_cvtepi32_ps(min_terms),
                                   acc_min[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) out[r] = HorizontalSum256(_mm256_sub_ps(acc[r], acc_min[r]));
}

template <int kRows>
void DotQ6_KRows(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  const BlockQ6_K* a = static_cast<const BlockQ6_K*>(w);
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i high_mask = _mm256_set1_epi8(0x30);
  __m256 acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m128i scales8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i].scales));
    const __m256i scales16 = _mm256_cvtepi8_epi16(scales8);
    __m256i sums[kRows];
    for (int r = 0; r < kRows; ++r) {  // the quants' +32, removed as 32 * sum_k scale_k * bsums_k
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q8_KRow(x, x_stride, r)[i].bsums));
      sums[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(scales16, bsums), 5));
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh + 32 * h));
      // Elements 128h + 32g .. + 31 for g = 0..3 (layout: scalar.cc DotQ6_KQ8_K).
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low_mask), _mm256_and_si256(_mm256_slli_epi16(qh, 4), high_mask)),
          _mm256_or_si256(_mm256_and_si256(ql1, low_mask), _mm256_and_si256(_mm256_slli_epi16(qh, 2), high_mask)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_mask), _mm256_and_si256(qh, high_mask)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_mask),
                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), high_mask))};
      for (int g = 0; g < 4; ++g) {
        // Scales k and k + 1 (one per 16 elements) for the two 128-bit lanes.
        const int k = 8 * h + 2 * g;
        const __m128i pick = _mm_set_epi64x(0x0101010101010101LL * (k + 1), 0x0101010101010101LL * k);
        const __m256i scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales8, pick));
        for (int r = 0; r < kRows; ++r) {
          const int8_t* xq = Q8_KRow(x, x_stride, r)[i].qs + 128 * h + 32 * g;
          const __m256i p = _mm256_maddubs_epi16(q[g], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)));
          sums[r] = _mm256_add_epi32(sums[r], _mm256_madd_epi16(scale, p));
        }
      }
    }
    const float dw = _cvtsh_ss(a[i].d);
    for (int r = 0; r < kRows; ++r) {
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * Q8_KRow(x, x_stride, r)[i].d), _mm256_cvtepi32_ps(sums[r]), acc[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) out[r] = HorizontalSum256(acc[r]);
}

// Each activation row keeps the 16 outputs in two 8-lane accumulators, so
// four rows give eight FMA chains.
template <int kRows>
void GemmF32X16Rows(const float* wt, int64_t cols, const float* x, int64_t ldx, float* out) {
  __m256 lo[kRows], hi[kRows];
  for (int r = 0; r < kRows; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < cols; ++c) {
    const __m256 w_lo = _mm256_load_ps(wt + c * 16), w_hi = _mm256_load_ps(wt + c * 16 + 8);
    for (int r = 0; r < kRows; ++r) {
      const __m256 xv = _mm256_set1_ps(x[r * ldx + c]);
      lo[r] = _mm256_fmadd_ps(xv, w_lo, lo[r]);
      hi[r] = _mm256_fmadd_ps(xv, w_hi, hi[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    _mm256_storeu_ps(out + r * 16, lo[r]);
    _mm256_storeu_ps(out + r * 16 + 8, hi[r]);
  }
}

void GemmF32X16(const float* wt, int64_t cols, const float* x, int64_t ldx, int n_x, float* out) {
  switch (n_x) {
    case 1: return GemmF32X16Rows<1>(wt, cols, x, ldx, out);
    case 2: return GemmF32X16Rows<2>(wt, cols, x, ldx, out);
    case 3: return GemmF32X16Rows<3>(wt, cols, x, ldx, out);
    default: return GemmF32X16Rows<4>(wt, cols, x, ldx, out);
  }
}

// Attention over cached rows: each row is loaded once for up to four query
// heads, and the row kRowsAhead positions on is requested explicitly (the
// hardware prefetchers fall behind on the cache, as in avx512.cc).
constexpr int64_t kRowsAhead = 16;

// The lines of row[0, n) (prefetches past the end do not fault).
void PrefetchFloats(const float* row, int64_t n) {
  for (int64_t c = 0; c < n; c += 16) _mm_prefetch(reinterpret_cast<const char*>(row + c), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(row + n - 1), _MM_HINT_T0);
}

template <int kHeads>
void DotRowsPass(const float* q, uint64_t ld_q, const float* rows, uint64_t stride, int64_t n, int64_t dim,
                 float* out, uint64_t ld_out) {
  for (int64_t t = 0; t < n; ++t) {
    const float* r = rows + t * stride;
    PrefetchFloats(r + kRowsAhead * stride, dim);
    // Two sums per head (even and odd chunks of 8), so a head's FMAs do not
    // wait on each other.
    __m256 even[kHeads], odd[kHeads];
    for (int h = 0; h < kHeads; ++h) even[h] = odd[h] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= dim; c += 16) {
      const __m256 r0 = _mm256_loadu_ps(r + c), r1 = _mm256_loadu_ps(r + c + 8);
      for (int h = 0; h < kHeads; ++h) {
        even[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * ld_q + c), r0, even[h]);
        odd[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * ld_q + c + 8), r1, odd[h]);
      }
    }
    if (c + 8 <= dim) {
      const __m256 r0 = _mm256_loadu_ps(r + c);
      for (int h = 0; h < kHeads; ++h) even[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * ld_q + c), r0, even[h]);
      c += 8;
    }
    for (int h = 0; h < kHeads; ++h) {
      float sum = HorizontalSum(_mm256_add_ps(even[h], odd[h]));
      for (int64_t i = c; i < dim; ++i) sum += q[h * ld_q + i] * r[i];
      out[h * ld_out + t] = sum;
    }
  }
}

void DotRowsF32(const float* q, uint64_t ld_q, int n_q, const float* rows, uint64_t stride, int64_t n, int64_t dim,
                float* out, uint64_t ld_out) {
  ForEachHeadPass(n_q, [&](auto heads, int h) {
    DotRowsPass<heads>(q + h * ld_q, ld_q, rows, stride, n, dim, out + h * ld_out, ld_out);
  });
}

// Columns [0, 16) of rows (the caller offsets them) for up to four heads, in
// registers across all rows. `ahead` floats of the row kRowsAhead on are
// requested: the first pass over a head's rows fetches them whole, so the
// later passes find them in L2.
template <int kHeads>
void WeightedRows16(const float* w, uint64_t ld_w, const float* rows, uint64_t stride, int64_t n, int64_t ahead,
                    float* out, uint64_t ld_out) {
  __m256 lo[kHeads], hi[kHeads];
  for (int h = 0; h < kHeads; ++h) lo[h] = hi[h] = _mm256_setzero_ps();
  for (int64_t t = 0; t < n; ++t) {
    const float* r = rows + t * stride;
    if (ahead > 0) PrefetchFloats(r + kRowsAhead * stride, ahead);
    const __m256 r0 = _mm256_loadu_ps(r), r1 = _mm256_loadu_ps(r + 8);
    for (int h = 0; h < kHeads; ++h) {
      const __m256 wt = _mm256_broadcast_ss(w + h * ld_w + t);
      lo[h] = _mm256_fmadd_ps(wt, r0, lo[h]);
      hi[h] = _mm256_fmadd_ps(wt, r1, hi[h]);
    }
  }
  for (int h = 0; h < kHeads; ++h) {
    _mm256_storeu_ps(out + h * ld_out, lo[h]);
    _mm256_storeu_ps(out + h * ld_out + 8, hi[h]);
  }
}

void WeightedRowsF32(const float* w, uint64_t ld_w, int n_q, const float* rows, uint64_t stride, int64_t n,
                     int64_t dim, float* out, uint64_t ld_out) {
  ForEachHeadPass(n_q, [&](auto heads, int h) {
    const float* wh = w + h * ld_w;
    float* oh = out + h * ld_out;
    int64_t c = 0;
    for (; c + 16 <= dim; c += 16) {
      WeightedRows16<heads>(wh, ld_w, rows + c, stride, n, c == 0 ? dim : 0, oh + c, ld_out);
    }
    // The last dim % 16 columns by axpy.
    for (int k = 0; k < heads && c < dim; ++k) {
      float* o = oh + k * ld_out + c;
      for (int64_t i = 0; i < dim - c; ++i) o[i] = 0;
      for (int64_t t = 0; t < n; ++t) AxpyF32(wh[k * ld_w + t], rows + t * stride + c, o, dim - c);
    }
  });
}

// exp(x) as 2^k * p(r), k = round(x log2 e), r = x - k ln 2 in two steps, p
// Cephes' expf polynomial; 2^k is built in the exponent bits, so x is kept
// where k stays normal and exp below -87.3 is set to zero.
__m256 Exp(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i pow2k = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(pow2k)));
}

void SwiGluF32(float* g, const float* u, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 sigmoid = _mm256_div_ps(one, _mm256_add_ps(one, Exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_mul_ps(x, sigmoid), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void SoftmaxF32(float* s, int64_t n, float scale) {
  float mx = -INFINITY;
  for (int64_t t = 0; t < n; ++t) mx = std::max(mx, s[t] *= scale);
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256d sum4 = _mm256_setzero_pd();
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(s + t), vmx));
    _mm256_storeu_ps(s + t, e);
    sum4 = _mm256_add_pd(sum4, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                                             _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
  }
  alignas(32) double parts[4];
  _mm256_store_pd(parts, sum4);
  double sum = parts[0] + parts[1] + parts[2] + parts[3];
  for (; t < n; ++t) sum += s[t] = std::exp(s[t] - mx);
  const float inv = static_cast<float>(1.0 / sum);
  for (t = 0; t < n; ++t) s[t] *= inv;
}

}  // namespace

const KernelSet* Avx2Kernels() {
  // Checked before the table is built: building it runs code compiled for
  // AVX2, which would fault on a CPU without it.
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx2 && f.fma && f.f16c)) return nullptr;
  static const KernelSet set = [] {
    KernelSet s = {"avx2", DotF32, DotF16F32, DotBf16F32, AxpyF32, F16ToF32, Bf16ToF32, Q8_0ToF32, Q4_0ToF32,
                   QuantizeQ8_0, DotQ8_0Q8_0, DotQ4_0Q8_0, Dot4Q8_0Q8_0, Dot4Q4_0Q8_0,
                   QuantizeQ8_K, OneRow<DotK4Rows<BlockQ4_K, 1>>, OneRow<DotK4Rows<BlockQ5_K, 1>>,
                   OneRow<DotQ6_KRows<1>>, DotK4Rows<BlockQ4_K, 4>,
                   DotK4Rows<BlockQ5_K, 4>, DotQ6_KRows<4>,
                   nullptr, nullptr,  // no VNNI: weights stay unpacked
                   GemmF32X16, DotRowsF32, WeightedRowsF32, SoftmaxF32, SwiGluF32};
    SetFileLayoutDots(s);
    return s;
  }();
  return &set;
}

}  // namespace micromoe::kernels
