// AVX-512 (F, BW, VL) kernels. This file alone is compiled with those flags;
// it is called only after cpuid says the CPU has them. Conversions without a
// wider form here reuse nothing from the AVX2 file: each ISA file stands alone.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include <type_traits>

#include "kernels/cpu_features.h"
#include "kernels/dot_rows.h"
#include "kernels/kernel_set.h"
#include "kernels/packed_avx512.h"
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

// Q5_0 (packed.h): adds 16 to the weights of the 8 vectors of
// LoadPackedBlock<true> whose fifth bit is set (bit k of the line for vector k).
inline void AddQ5_0FifthBits(const uint8_t* line, __m512i w[8]) {
  const __m512i bits = _mm512_load_si512(line), sixteen = _mm512_set1_epi8(16);
  for (int k = 0; k < 8; ++k) {
    w[k] = _mm512_mask_add_epi8(w[k], _mm512_test_epi8_mask(bits, _mm512_set1_epi8(static_cast<char>(1 << k))), w[k],
                                sixteen);
  }
}

// IQ4_NL's 16 values plus 128 (so vpdpbusd takes them unsigned) in every
// 128-bit lane, for vpshufb with nibble indices.
inline __m512i IQ4UnsignedValues() {
  alignas(16) static constexpr uint8_t kTable[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};
  static_assert(kTable[0] == kIQ4NLValues[0] + 128 && kTable[15] == kIQ4NLValues[15] + 128);
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kTable)));
}

// The packed 32-element types (packed.h); Q5_0 and IQ4_NL are Q4_0's nibbles
// plus fifth bits or looked up in IQ4_NL's values (plus 128).
enum class Packed32 { kQ8_0, kQ4_0, kQ5_0, kIQ4_NL };

// Packed block q's eight vectors of unsigned weights (LoadPackedBlock's order).
template <Packed32 kType>
inline void LoadQuantBlock(const uint8_t* q, __m512i w[8]) {
  LoadPackedBlock<kType != Packed32::kQ8_0>(q, w);
  if constexpr (kType == Packed32::kQ5_0) AddQ5_0FifthBits(q + 256, w);
  if constexpr (kType == Packed32::kIQ4_NL) {
    const __m512i values = IQ4UnsignedValues();
    for (int k = 0; k < 8; ++k) w[k] = _mm512_shuffle_epi8(values, w[k]);
  }
}

template <Packed32 kType>
constexpr int kQuantChunkBytes = (kType == Packed32::kQ8_0 ? 8 : kType == Packed32::kQ5_0 ? 5 : 4) * 64;

template <int kRows, Packed32 kType>
void GemmX16Rows(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
                 uint64_t terms_stride, float* out) {
  constexpr int kChunkBytes = kQuantChunkBytes<kType>;
  __m512 acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    PrefetchBlockAhead<kChunkBytes>(group, b, kPrefetchBytes);
    __m512i w[8];
    LoadQuantBlock<kType>(group + PackedQuantsOffset(b, kChunkBytes), w);
    const __m512 dw = LoadBlockScales<kChunkBytes>(group, b);
    for (int r = 0; r < kRows; ++r) {
      __m512i xb[8];
      BroadcastCodes(xq + r * xq_stride + b * sizeof(BlockQ8_0) + 2, xb);
      const float* t = terms + r * terms_stride + 2 * b;
      const __m512 dot = _mm512_sub_ps(_mm512_cvtepi32_ps(DotPackedBlock(w, xb)), _mm512_set1_ps(t[1]));
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dot, _mm512_set1_ps(t[0])), dw, acc[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(out + r * 16, acc[r]);
}

// K-quant weights against Q8_K activations, 64 elements per vector: the
// arithmetic of the AVX2 kernels (avx2.cc), with dpwssd applying the int16
// sub-block scales and accumulating in one step.

template <typename Block, int kRows>
void DotK4Rows(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  constexpr bool kQ5 = std::is_same_v<Block, BlockQ5_K>;
  const Block* a = static_cast<const Block*>(w);
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  __m512 acc[kRows];
  __m256 acc_min[kRows];
  for (int r = 0; r < kRows; ++r) {
    acc[r] = _mm512_setzero_ps();
    acc_min[r] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m128i scales_mins = ScalesMinsK4(a[i].scales);
    // 8 int16 scales in each 128-bit lane, picked per sub-block by shuffles.
    const __m512i scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(scales_mins));
    // Each min twice, against the two bsums (of 16) of its sub-block.
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scales_mins, scales_mins));
    // qh, and qh >> 1 in the upper half: bit 2j of a byte is then the fifth
    // bit of sub-block 2j (lower half) or 2j + 1 (upper half).
    __m512i high_bits = _mm512_setzero_si512();
    if constexpr (kQ5) {
      high_bits = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh)));
      high_bits = _mm512_mask_srli_epi16(high_bits, 0xFFFF0000u, high_bits, 1);
    }
    __m512i sums[kRows];
    for (int r = 0; r < kRows; ++r) sums[r] = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {  // 64 elements: sub-blocks 2j (low nibbles) and 2j + 1 (high)
      __m512i quants = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs + 32 * j)));
      quants = _mm512_and_si512(_mm512_mask_srli_epi16(quants, 0xFFFF0000u, quants, 4), low_mask);
      if constexpr (kQ5) {
        const __mmask64 fifth = _mm512_test_epi8_mask(high_bits, _mm512_set1_epi8(static_cast<char>(1 << (2 * j))));
        quants = _mm512_mask_add_epi8(quants, fifth, quants, _mm512_set1_epi8(16));
      }
      // Bytes 2k, 2k + 1 of each 128-bit lane: int16 scale k (2j below, 2j + 1 above).
      const __m512i pick = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<short>(0x0100 + 0x0404 * j)),
                                              _mm256_set1_epi16(static_cast<short>(0x0302 + 0x0404 * j)), 1);
      const __m512i scale = _mm512_shuffle_epi8(scales, pick);
      for (int r = 0; r < kRows; ++r) {
        const int8_t* xq = Q8_KRow(x, x_stride, r)[i].qs + 64 * j;
        const __m512i p = _mm512_maddubs_epi16(quants, _mm512_loadu_si512(xq));
        sums[r] = _mm512_dpwssd_epi32(sums[r], p, scale);
      }
    }
    // d and dmin (adjacent fp16) converted together.
    uint32_t d_dmin;
    __builtin_memcpy(&d_dmin, &a[i].d, 4);
    const __m128 dw_dmin = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(d_dmin)));
    for (int r = 0; r < kRows; ++r) {
      const BlockQ8_K& xb = Q8_KRow(x, x_stride, r)[i];
      const __m128 scaled = _mm_mul_ps(dw_dmin, _mm_set1_ps(xb.d));
      acc[r] = _mm512_fmadd_ps(_mm512_broadcastss_ps(scaled), _mm512_cvtepi32_ps(sums[r]), acc[r]);
      const __m256i min_terms = _mm256_madd_epi16(mins, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.bsums)));
      acc_min[r] = _mm256_fmadd_ps(_mm256_permutexvar_ps(_mm256_set1_epi32(1), _mm256_castps128_ps256(scaled)),
                                   _mm256_cvtepi32_ps(min_terms), acc_min[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    out[r] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[r], _mm512_zextps256_ps512(acc_min[r])));
  }
}

template <int kRows>
void DotQ6_KRows(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  const BlockQ6_K* a = static_cast<const BlockQ6_K*>(w);
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i high_mask = _mm512_set1_epi8(0x30);
  // Lane i of a 64-element vector belongs to 16-element sub-block i / 8.
  const __m512i sub_block_of_lane = _mm512_set_epi64(0x0003000300030003LL, 0x0003000300030003LL, 0x0002000200020002LL,
                                                     0x0002000200020002LL, 0x0001000100010001LL, 0x0001000100010001LL, 0, 0);
  __m512 acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i].scales)));
    const __m512i scales = _mm512_castsi256_si512(scales16);  // permutes below read lanes 0..15 only
    __m512i sums[kRows];
    for (int r = 0; r < kRows; ++r) {  // the quants' +32, removed as 32 * sum_k scale_k * bsums_k
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q8_KRow(x, x_stride, r)[i].bsums));
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(scales16, bsums), 5);
      sums[r] = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), offset));
    }
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(a[i].ql + 64 * h);
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh + 32 * h));
      // qh, and qh >> 2 in the upper half: the high 2 bits of elements
      // 128h + 0..63 at bits 0..1, those of 128h + 64..127 at bits 4..5.
      const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
      const __m512i first =
          _mm512_or_si512(_mm512_and_si512(ql, low_mask), _mm512_and_si512(_mm512_slli_epi16(qh2, 4), high_mask));
      const __m512i second =
          _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low_mask), _mm512_and_si512(qh2, high_mask));
      // Sub-blocks 8h .. 8h + 3 for the first 64 elements, 8h + 4 .. 8h + 7 for the second.
      const __m512i first_sub_blocks = _mm512_add_epi16(sub_block_of_lane, _mm512_set1_epi16(static_cast<short>(8 * h)));
      const __m512i second_sub_blocks = _mm512_add_epi16(first_sub_blocks, _mm512_set1_epi16(4));
      const __m512i scale_first = _mm512_permutexvar_epi16(first_sub_blocks, scales);
      const __m512i scale_second = _mm512_permutexvar_epi16(second_sub_blocks, scales);
      for (int r = 0; r < kRows; ++r) {
        const int8_t* xq = Q8_KRow(x, x_stride, r)[i].qs + 128 * h;
        sums[r] = _mm512_dpwssd_epi32(sums[r], _mm512_maddubs_epi16(first, _mm512_loadu_si512(xq)), scale_first);
        sums[r] = _mm512_dpwssd_epi32(sums[r], _mm512_maddubs_epi16(second, _mm512_loadu_si512(xq + 64)), scale_second);
      }
    }
    const float dw = _cvtsh_ss(a[i].d);
    for (int r = 0; r < kRows; ++r) {
      acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(dw * Q8_KRow(x, x_stride, r)[i].d), _mm512_cvtepi32_ps(sums[r]), acc[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

// The decode form of GemmX16Rows<1> over kGroups groups (groups[i], each the
// next group of its stream):
// the activation broadcasts and terms of a block serve all of them, and the
// separate streams (each prefetched 1/kGroups as far ahead) keep more memory
// requests in flight than one stream can. Over 256 MiB of packed groups, one
// core: Q8_0 21 / 28 / 36-42 GB/s and Q4_0 19 / 22-24 / 28-37 GB/s for 1 / 2 / 4
// groups, while a plain single-stream read ran 25-38 GB/s (8 groups: slower).
// Group i's 16 outputs go to outs[i].
template <Packed32 kType, int kGroups>
void GemvGroupsOf(const uint8_t* const* groups, int64_t nb, const uint8_t* xq, const float* terms,
                  float* const* outs) {
  constexpr int kChunkBytes = kQuantChunkBytes<kType>;
  __m512 acc[kGroups];
  for (int i = 0; i < kGroups; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512i xb[8];
    BroadcastCodes(xq + b * sizeof(BlockQ8_0) + 2, xb);
    const __m512 offset = _mm512_set1_ps(terms[2 * b + 1]), dx = _mm512_set1_ps(terms[2 * b]);
    for (int i = 0; i < kGroups; ++i) {
      const uint8_t* g = groups[i];
      PrefetchBlockAhead<kChunkBytes>(g, b, kPrefetchBytes / kGroups);
      __m512i w[8];
      LoadQuantBlock<kType>(g + PackedQuantsOffset(b, kChunkBytes), w);
      const __m512 dw = LoadBlockScales<kChunkBytes>(g, b);
      const __m512 dot = _mm512_sub_ps(_mm512_cvtepi32_ps(DotPackedBlock(w, xb)), offset);
      acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(dot, dx), dw, acc[i]);
    }
  }
  for (int i = 0; i < kGroups; ++i) _mm512_storeu_ps(outs[i], acc[i]);
}

// Packed Q4_K / Q5_K (packed.h) against Q8_K activations. Per super-block and
// group, the 16 rows' 6-bit scales and mins are unpacked to bytes at once;
// per sub-block j, dpbusd of the unsigned nibbles against the codes gives 16
// integer dots, multiplied by the rows' scale_j into one integer sum, and the
// mins multiply the activation's sum of codes over sub-block j. One float
// step per super-block: acc += d_x * (d[i] * scaled[i] - dmin[i] * mins[i]).
struct K4Scales {
  alignas(64) uint8_t scales[128];  // sub-block j's scale of row i at 16 j + i
  alignas(64) uint8_t mins[128];
};

// Super-block sb's scale lines (bytes 0-3, 4-7 and 8-11 of the 16 rows):
// sub-blocks 0-3 take the low 6 bits of bytes 0-3 (scales) and 4-7 (mins);
// sub-blocks 4-7 the nibbles of bytes 8-11, topped with the top 2 bits of
// bytes 0-3 (scales) or 4-7 (mins) moved to bits 4-5. (Kept in registers and
// picked with extracts instead, they made the kernel slower: 75-79 against
// 90 GB/s from L2.)
inline void UnpackK4Scales(const uint8_t* sb, K4Scales* out) {
  const uint8_t* lines = sb + kPackedK4ScalesOffset;
  const __m512i a = _mm512_load_si512(lines), b = _mm512_load_si512(lines + 64), c = _mm512_load_si512(lines + 128);
  const __m512i low6 = _mm512_set1_epi8(63), low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
  _mm512_store_si512(out->scales, _mm512_and_si512(a, low6));
  _mm512_store_si512(out->mins, _mm512_and_si512(b, low6));
  _mm512_store_si512(out->scales + 64, _mm512_or_si512(_mm512_and_si512(c, low4),
                                                       _mm512_and_si512(_mm512_srli_epi16(a, 2), bits45)));
  _mm512_store_si512(out->mins + 64, _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(c, 4), low4),
                                                     _mm512_and_si512(_mm512_srli_epi16(b, 2), bits45)));
}

// 16 bytes (one per row) as 32-bit lanes.
inline __m512i WidenRowBytes(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
}

// The 8 lines of sub-block pair t as 16 vectors of nibbles: w[k] holds
// elements 4k..4k+3 of sub-block 2t of each row, w[8 + k] those of 2t + 1.
inline void UnpackK4Pair(const uint8_t* lines, __m512i w[16]) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int k = 0; k < 8; ++k) {
    const __m512i v = _mm512_load_si512(lines + 64 * k);
    w[k] = _mm512_and_si512(v, low4);
    w[8 + k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
  }
}

inline __m512i BroadcastCode4(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Lane i: row i's dots of two sub-blocks of 4 kVectors elements with the
// codes x: the low one from w[0, kVectors), the high one from w[kVectors,
// 2 kVectors) against the next codes; in four chains. (A pair of Q4_K
// sub-blocks from UnpackK4Pair: kVectors 8; 32 elements of Q2_K / Q3_K: 4.)
template <int kVectors>
inline void PairDots(const __m512i* w, const int8_t* x, __m512i* low, __m512i* high) {
  __m512i low0 = _mm512_setzero_si512(), low1 = low0, high0 = low0, high1 = low0;
  for (int k = 0; k < kVectors; k += 2) {
    low0 = _mm512_dpbusd_epi32(low0, w[k], BroadcastCode4(x + 4 * k));
    low1 = _mm512_dpbusd_epi32(low1, w[k + 1], BroadcastCode4(x + 4 * k + 4));
    high0 = _mm512_dpbusd_epi32(high0, w[kVectors + k], BroadcastCode4(x + 4 * (kVectors + k)));
    high1 = _mm512_dpbusd_epi32(high1, w[kVectors + k + 1], BroadcastCode4(x + 4 * (kVectors + k) + 4));
  }
  *low = _mm512_add_epi32(low0, low1);
  *high = _mm512_add_epi32(high0, high1);
}

// Lane i: sum over sub-blocks 2t and 2t + 1 of row i's scale times its dot.
inline __m512i ScaledPairDot(const __m512i w[16], const int8_t* x, const uint8_t* scales) {
  __m512i low, high;
  PairDots<8>(w, x, &low, &high);
  return _mm512_add_epi32(_mm512_mullo_epi32(low, WidenRowBytes(scales)),
                          _mm512_mullo_epi32(high, WidenRowBytes(scales + 16)));
}

// Lane i: sum over sub-blocks j of row i's min_j times the activation's sum
// of codes over sub-block j.
inline __m512i MinTerms(const uint8_t* mins, const BlockQ8_K& x) {
  __m512i m = _mm512_setzero_si512();
  for (int j = 0; j < 8; ++j) {
    const __m512i sum = _mm512_set1_epi32(x.bsums[2 * j] + x.bsums[2 * j + 1]);
    m = _mm512_add_epi32(m, _mm512_mullo_epi32(WidenRowBytes(mins + 16 * j), sum));
  }
  return m;
}

// Q5_K: sets bit 4 of the 16 vectors of UnpackK4Pair from the pair's two
// lines of fifth bits (packed.h).
inline void AddFifthBits(const uint8_t* lines, __m512i w[16]) {
  const __m512i sixteen = _mm512_set1_epi8(16);
  for (int k = 0; k < 8; ++k) {
    const __m512i bits = _mm512_load_si512(lines + 64 * (k / 4));
    const char low = static_cast<char>(1 << (2 * (k % 4))), high = static_cast<char>(2 << (2 * (k % 4)));
    w[k] = _mm512_mask_add_epi8(w[k], _mm512_test_epi8_mask(bits, _mm512_set1_epi8(low)), w[k], sixteen);
    w[8 + k] = _mm512_mask_add_epi8(w[8 + k], _mm512_test_epi8_mask(bits, _mm512_set1_epi8(high)), w[8 + k], sixteen);
  }
}

// Super-block sb of one group against the activation blocks x[r] of
// kRows rows, into acc[r]: each pair of sub-blocks is unpacked once for all
// rows (the prompt path's weights sit in L1 meanwhile).
template <bool kQ5, int kRows, int kAhead>
inline void AddK4SuperBlock(const uint8_t* sb, const BlockQ8_K* const x[kRows], __m512 acc[kRows]) {
  constexpr int kPairLines = kQ5 ? 11 : 9;  // a quarter of the super-block's lines
  K4Scales s;
  UnpackK4Scales(sb, &s);
  __m512i scaled[kRows];
  for (int r = 0; r < kRows; ++r) scaled[r] = _mm512_setzero_si512();
  for (int t = 0; t < 4; ++t) {
    for (int k = 0; k < kPairLines; ++k) {
      _mm_prefetch(reinterpret_cast<const char*>(sb + kAhead + 64 * (kPairLines * t + k)), _MM_HINT_T0);
    }
    __m512i w[16];
    UnpackK4Pair(sb + PackedK4PairOffset(kQ5, t), w);
    if constexpr (kQ5) AddFifthBits(sb + PackedK4PairOffset(kQ5, t) + 512, w);
    for (int r = 0; r < kRows; ++r) {
      scaled[r] = _mm512_add_epi32(scaled[r], ScaledPairDot(w, x[r]->qs + 64 * t, s.scales + 32 * t));
    }
  }
  const __m512 d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb)));
  const __m512 dmin = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb + 32)));
  for (int r = 0; r < kRows; ++r) {
    const __m512 dx = _mm512_set1_ps(x[r]->d);
    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(scaled[r]), acc[r]);
    acc[r] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(MinTerms(s.mins, *x[r])), acc[r]);
  }
}

// Packed IQ4_XS (packed.h) against Q8_K activations: per pair of
// sub-blocks, the nibbles as packed Q4_K's, looked up in the 16 values plus
// 128 (one byte shuffle, so dpbusd takes them unsigned); 128 times the
// activation's sum over the sub-block is taken back off and the rows' signed
// scales multiply the dots into one integer sum; one float step per
// super-block: acc += d[i] * d_x * scaled[i].
template <int kRows, int kAhead>
inline void AddIQ4_XSSuperBlock(const uint8_t* sb, const BlockQ8_K* const x[kRows], __m512 acc[kRows]) {
  constexpr int kPairLines = 8;
  for (int k = 0; k < 2; ++k) _mm_prefetch(reinterpret_cast<const char*>(sb + kAhead + 64 * k), _MM_HINT_T0);
  const __m512i values = IQ4UnsignedValues();
  // Scales of sub-block j, one per row: (nibble j % 2 of scales_l byte j / 2)
  // | (bits 2j, 2j + 1 of scales_h) << 4, minus 32.
  const __m512i high = _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb + 32)));
  __m512i scales[8];
  for (int j = 0; j < 8; ++j) {
    const __m512i low = _mm512_srli_epi32(WidenRowBytes(sb + kPackedIQ4_XSScalesOffset + 16 * (j / 2)), 4 * (j % 2));
    scales[j] = _mm512_sub_epi32(
        _mm512_or_si512(_mm512_and_si512(low, _mm512_set1_epi32(15)),
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(high, 2 * j), _mm512_set1_epi32(3)), 4)),
        _mm512_set1_epi32(32));
  }
  __m512i scaled[kRows];
  for (int r = 0; r < kRows; ++r) scaled[r] = _mm512_setzero_si512();
  for (int t = 0; t < 4; ++t) {
    for (int k = 0; k < kPairLines; ++k) {
      _mm_prefetch(reinterpret_cast<const char*>(sb + kAhead + PackedIQ4_XSPairOffset(t) + 64 * k), _MM_HINT_T0);
    }
    __m512i w[16];
    UnpackK4Pair(sb + PackedIQ4_XSPairOffset(t), w);
    for (int k = 0; k < 16; ++k) w[k] = _mm512_shuffle_epi8(values, w[k]);
    for (int r = 0; r < kRows; ++r) {
      __m512i low, high_dot;
      PairDots<8>(w, x[r]->qs + 64 * t, &low, &high_dot);
      const int16_t* bsums = x[r]->bsums + 4 * t;
      low = _mm512_sub_epi32(low, _mm512_set1_epi32(128 * (bsums[0] + bsums[1])));
      high_dot = _mm512_sub_epi32(high_dot, _mm512_set1_epi32(128 * (bsums[2] + bsums[3])));
      scaled[r] = _mm512_add_epi32(scaled[r], _mm512_add_epi32(_mm512_mullo_epi32(low, scales[2 * t]),
                                                               _mm512_mullo_epi32(high_dot, scales[2 * t + 1])));
    }
  }
  const __m512 d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb)));
  for (int r = 0; r < kRows; ++r) {
    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(x[r]->d)), _mm512_cvtepi32_ps(scaled[r]), acc[r]);
  }
}

// Packed Q3_K and Q2_K (packed.h) against Q8_K activations: the 16 rows'
// 16 scales are unpacked to bytes at once (Q3_K's signed, Q2_K's with their
// mins); per 32 elements, the 2-bit quants of two lines (Q3_K: plus 4 where
// the third bit is set, with a masked add) make unsigned values, dpbusd
// gives the dots of sub-blocks 2q and 2q + 1 (Q3_K: less 4 times the
// activation's sums over them, the values' -4), and the rows' scales
// multiply them into one integer sum; one float step per super-block: acc
// += d[i] d_x scaled[i] (Q2_K: - dmin[i] d_x sum_s min_s[i] bsum_s).
template <bool kQ3, int kRows, int kAhead>
inline void AddLowKSuperBlock(const uint8_t* sb, const uint8_t* d16, const BlockQ8_K* const x[kRows],
                              __m512 acc[kRows]) {
  constexpr int kHeadLines = kQ3 ? 3 : 5;  // scale lines (Q2_K: after the d / dmin line)
  for (int k = 0; k < kHeadLines; ++k) _mm_prefetch(reinterpret_cast<const char*>(sb + kAhead + 64 * k), _MM_HINT_T0);
  alignas(64) int8_t scales[256];  // sub-block s's scale of row i at 16 s + i
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512i min_terms[kRows];  // Q2_K: lane i, sum over sub-blocks s of min_s[i] * bsums[s]
  if constexpr (kQ3) {
    // The low nibbles of bytes 0-3 (s 0-3) and 4-7 (s 4-7), then their high
    // nibbles (s 8-15), topped with 2 bits of bytes 8-11, minus 32.
    const __m512i a = _mm512_load_si512(sb), b = _mm512_load_si512(sb + 64), c = _mm512_load_si512(sb + 128);
    const __m512i nibbles[4] = {a, b, _mm512_srli_epi16(a, 4), _mm512_srli_epi16(b, 4)};
    for (int v = 0; v < 4; ++v) {
      const __m512i top = _mm512_and_si512(_mm512_srli_epi16(c, 2 * v), _mm512_set1_epi8(3));
      const __m512i scale = _mm512_or_si512(_mm512_and_si512(nibbles[v], low4), _mm512_slli_epi16(top, 4));
      _mm512_store_si512(scales + 64 * v, _mm512_sub_epi8(scale, _mm512_set1_epi8(32)));
    }
  } else {
    alignas(64) uint8_t mins[256];
    for (int v = 0; v < 4; ++v) {
      const __m512i bytes = _mm512_load_si512(sb + 64 + 64 * v);
      _mm512_store_si512(scales + 64 * v, _mm512_and_si512(bytes, low4));
      _mm512_store_si512(mins + 64 * v, _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4));
    }
    for (int r = 0; r < kRows; ++r) {
      min_terms[r] = _mm512_setzero_si512();
      for (int sub = 0; sub < 16; ++sub) {
        min_terms[r] = _mm512_add_epi32(min_terms[r], _mm512_mullo_epi32(WidenRowBytes(mins + 16 * sub),
                                                                         _mm512_set1_epi32(x[r]->bsums[sub])));
      }
    }
  }
  __m512i scaled[kRows];
  for (int r = 0; r < kRows; ++r) scaled[r] = _mm512_setzero_si512();
  const __m512i two_bits = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
  constexpr int kLines = kQ3 ? 3 : 2;
  for (int q = 0; q < 8; ++q) {
    const uint8_t* lines = kQ3 ? sb + 192 + 192 * q : sb + PackedQ2_KQuantsOffset(q);
    for (int k = 0; k < kLines; ++k) _mm_prefetch(reinterpret_cast<const char*>(lines + kAhead + 64 * k), _MM_HINT_T0);
    const __m512i quants[2] = {_mm512_load_si512(lines), _mm512_load_si512(lines + 64)};
    __m512i w[8];
    for (int k = 0; k < 8; ++k) w[k] = _mm512_and_si512(_mm512_srli_epi16(quants[k / 4], 2 * (k % 4)), two_bits);
    if constexpr (kQ3) {
      const __m512i third = _mm512_load_si512(lines + 128);
      for (int k = 0; k < 8; ++k) {
        w[k] = _mm512_mask_add_epi8(w[k], _mm512_test_epi8_mask(third, _mm512_set1_epi8(static_cast<char>(1 << k))),
                                    w[k], four);
      }
    }
    const __m512i scale_lo = _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(scales + 32 * q)));
    const __m512i scale_hi =
        _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(scales + 32 * q + 16)));
    for (int r = 0; r < kRows; ++r) {
      __m512i lo, hi;
      PairDots<4>(w, x[r]->qs + 32 * q, &lo, &hi);
      if constexpr (kQ3) {
        const int16_t* bsums = x[r]->bsums + 2 * q;
        lo = _mm512_sub_epi32(lo, _mm512_set1_epi32(4 * bsums[0]));
        hi = _mm512_sub_epi32(hi, _mm512_set1_epi32(4 * bsums[1]));
      }
      scaled[r] = _mm512_add_epi32(scaled[r], _mm512_add_epi32(_mm512_mullo_epi32(lo, scale_lo),
                                                               _mm512_mullo_epi32(hi, scale_hi)));
    }
  }
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d16)));
  for (int r = 0; r < kRows; ++r) {
    const __m512 dx = _mm512_set1_ps(x[r]->d);
    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(scaled[r]), acc[r]);
  }
  if constexpr (!kQ3) {
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d16 + 32)));
    for (int r = 0; r < kRows; ++r) {
      acc[r] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, _mm512_set1_ps(x[r]->d)), _mm512_cvtepi32_ps(min_terms[r]), acc[r]);
    }
  }
}

// Packed Q6_K (packed.h) against Q8_K activations: per sub-block j of 16,
// the 6-bit values of each row are put together from its three lines, and
// dpbusd adds their products with the codes to a chain that starts at -32
// times the activation's sum over the sub-block (the values' offset), so
// lane i gets row i's dot with (q - 32); times its scale into one integer
// sum; one float step per super-block: acc += d[i] * d_x * scaled[i].
template <int kRows>
inline void AddQ6_KSubBlock(const uint8_t* sb, int j, const BlockQ8_K* const x[kRows], __m512i scaled[kRows]) {
  const uint8_t* lines = sb + 256 + 192 * j;
  const __m512i low = _mm512_load_si512(lines), high = _mm512_load_si512(lines + 64), top = _mm512_load_si512(lines + 128);
  const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
  const __m512i q0 = _mm512_or_si512(_mm512_and_si512(low, low4), _mm512_and_si512(_mm512_slli_epi16(top, 4), bits45));
  const __m512i q1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(low, 4), low4),
                                     _mm512_and_si512(_mm512_slli_epi16(top, 2), bits45));
  const __m512i q2 = _mm512_or_si512(_mm512_and_si512(high, low4), _mm512_and_si512(top, bits45));
  const __m512i q3 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(high, 4), low4),
                                     _mm512_and_si512(_mm512_srli_epi16(top, 2), bits45));
  const __m512i scale = _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(sb + 16 * j)));
  for (int r = 0; r < kRows; ++r) {
    const int8_t* codes = x[r]->qs + 16 * j;
    __m512i dot = _mm512_set1_epi32(-32 * x[r]->bsums[j]);
    dot = _mm512_dpbusd_epi32(dot, q0, BroadcastCode4(codes));
    dot = _mm512_dpbusd_epi32(dot, q1, BroadcastCode4(codes + 4));
    dot = _mm512_dpbusd_epi32(dot, q2, BroadcastCode4(codes + 8));
    dot = _mm512_dpbusd_epi32(dot, q3, BroadcastCode4(codes + 12));
    scaled[r] = _mm512_add_epi32(scaled[r], _mm512_mullo_epi32(dot, scale));
  }
}

// Super-block sb (its d at d16) of one group against the activation blocks
// x[r] of kRows rows, into acc[r].
template <int kRows, int kAhead>
inline void AddQ6_KSuperBlock(const uint8_t* sb, const uint8_t* d16, const BlockQ8_K* const x[kRows], __m512 acc[kRows]) {
  __m512i scaled[kRows];
  for (int r = 0; r < kRows; ++r) scaled[r] = _mm512_setzero_si512();
  for (int j = 0; j < 16; ++j) {
    // The 52 lines: sub-block j's three, and scale line j in the first four steps.
    if (j < 4) _mm_prefetch(reinterpret_cast<const char*>(sb + kAhead + 64 * j), _MM_HINT_T0);
    for (int k = 0; k < 3; ++k) _mm_prefetch(reinterpret_cast<const char*>(sb + kAhead + 256 + 192 * j + 64 * k), _MM_HINT_T0);
    AddQ6_KSubBlock<kRows>(sb, j, x, scaled);
  }
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d16)));
  for (int r = 0; r < kRows; ++r) {
    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(x[r]->d)), _mm512_cvtepi32_ps(scaled[r]), acc[r]);
  }
}

// Up to four activation rows of packed Q2_K to Q6_K (kBits 2 to 6)
// or IQ4_XS (kIQ4_XSBits), one group, a super-block at a time.
constexpr int kIQ4_XSBits = 0;
template <int kBits, int kRows>
void GemmKQuantX16Rows(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, float* out) {
  __m512 acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t s = 0; s < nb; ++s) {
    const BlockQ8_K* x[kRows];
    for (int r = 0; r < kRows; ++r) x[r] = reinterpret_cast<const BlockQ8_K*>(xq + r * xq_stride) + s;
    if constexpr (kBits == 6) {
      AddQ6_KSuperBlock<kRows, kPrefetchBytes>(group + PackedQ6_KBlockOffset(nb, s), group + PackedDsFirstDOffset(s), x, acc);
    } else if constexpr (kBits == kIQ4_XSBits) {
      AddIQ4_XSSuperBlock<kRows, kPrefetchBytes>(group + s * kPackedIQ4_XSBytes, x, acc);
    } else if constexpr (kBits == 3) {
      AddLowKSuperBlock<true, kRows, kPrefetchBytes>(group + PackedQ3_KBlockOffset(nb, s), group + PackedDsFirstDOffset(s),
                                                     x, acc);
    } else if constexpr (kBits == 2) {
      const uint8_t* sb = group + s * kPackedQ2_KBytes;
      AddLowKSuperBlock<false, kRows, kPrefetchBytes>(sb, sb, x, acc);
    } else {
      AddK4SuperBlock<kBits == 5, kRows, kPrefetchBytes>(group + s * PackedK4Bytes(kBits == 5), x, acc);
    }
  }
  for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(out + r * 16, acc[r]);
}

// Packed BF16 (packed.h): line p of a group holds column pair p of its 16
// rows, so VDPBF16PS with the activation pair broadcast adds both products
// to each row's lane. Two accumulator chains per activation row (even and odd
// lines) keep the instruction's latency covered.
// One BF16 pair (4 bytes at p) in every lane. Read as one scalar each: an
// array of two let GCC keep the accumulators on the stack.
__attribute__((target("avx512bf16"))) inline __m512bh BroadcastPair(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(v));
}

template <int kRows>
__attribute__((target("avx512bf16"))) void GemmBf16X16Rows(const uint8_t* group, int64_t nb, const uint8_t* x,
                                                           uint64_t x_stride, float* out) {
  __m512 even[kRows], odd[kRows];
  for (int r = 0; r < kRows; ++r) even[r] = odd[r] = _mm512_setzero_ps();
  const int64_t lines = nb * 16;
  for (int64_t p = 0; p < lines; p += 2) {
    const uint8_t* q = group + p * 64;
    _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes + 64), _MM_HINT_T0);
    const __m512bh w0 = reinterpret_cast<__m512bh>(_mm512_load_si512(q));
    const __m512bh w1 = reinterpret_cast<__m512bh>(_mm512_load_si512(q + 64));
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* pairs = x + r * x_stride + p * 4;
      even[r] = _mm512_dpbf16_ps(even[r], w0, BroadcastPair(pairs));
      odd[r] = _mm512_dpbf16_ps(odd[r], w1, BroadcastPair(pairs + 4));
    }
  }
  for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(out + r * 16, _mm512_add_ps(even[r], odd[r]));
}

// Packed F16: the 32 halves of line p converted to two float vectors, rows
// 0-7 and 8-15, each row's even and odd column in adjacent lanes, multiplied
// by the activation pair broadcast as one 64-bit value; adjacent lanes are
// added at the end. Two chains (low and high rows) per activation row.
inline __m512 BroadcastFloatPair(const uint8_t* p) {
  double v;
  __builtin_memcpy(&v, p, 8);
  return _mm512_castpd_ps(_mm512_set1_pd(v));
}

// out[i] = lane 2i + lane 2i + 1 of (low, high): row i of the 16.
inline __m512 AddLanePairs(__m512 low, __m512 high) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  return _mm512_add_ps(_mm512_permutex2var_ps(low, even, high), _mm512_permutex2var_ps(low, odd, high));
}

template <int kRows>
void GemmF16X16Rows(const uint8_t* group, int64_t nb, const uint8_t* x, uint64_t x_stride, float* out) {
  __m512 low[kRows], high[kRows];
  for (int r = 0; r < kRows; ++r) low[r] = high[r] = _mm512_setzero_ps();
  const int64_t lines = nb * 16;
  for (int64_t p = 0; p < lines; ++p) {
    const uint8_t* q = group + p * 64;
    _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes), _MM_HINT_T0);
    const __m512 w_low = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(q)));
    const __m512 w_high = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(q + 32)));
    for (int r = 0; r < kRows; ++r) {
      const __m512 pair = BroadcastFloatPair(x + r * x_stride + p * 8);
      low[r] = _mm512_fmadd_ps(w_low, pair, low[r]);
      high[r] = _mm512_fmadd_ps(w_high, pair, high[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(out + r * 16, AddLanePairs(low[r], high[r]));
}

// Tiles of up to four activation rows (the AMX back-end passes up to 16).
template <void (*kRowsOf1)(const uint8_t*, int64_t, const uint8_t*, uint64_t, float*),
          void (*kRowsOf2)(const uint8_t*, int64_t, const uint8_t*, uint64_t, float*),
          void (*kRowsOf3)(const uint8_t*, int64_t, const uint8_t*, uint64_t, float*),
          void (*kRowsOf4)(const uint8_t*, int64_t, const uint8_t*, uint64_t, float*)>
void GemmX16InTilesOf4(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* /*terms*/,
                 uint64_t /*terms_stride*/, int n_x, float* out) {
  for (int r = 0; r < n_x; r += 4) {
    const uint8_t* x = xq + r * xq_stride;
    switch (std::min(4, n_x - r)) {
      case 1: kRowsOf1(group, nb, x, xq_stride, out + r * 16); break;
      case 2: kRowsOf2(group, nb, x, xq_stride, out + r * 16); break;
      case 3: kRowsOf3(group, nb, x, xq_stride, out + r * 16); break;
      default: kRowsOf4(group, nb, x, xq_stride, out + r * 16); break;
    }
  }
}

// The decode form of GemmBf16X16Rows<1> over kGroups streams, as GemvGroupsOf.
template <int kGroups>
__attribute__((target("avx512bf16"))) void GemvBf16GroupsOf(const uint8_t* const* groups, int64_t nb,
                                                            const uint8_t* x, float* const* outs) {
  __m512 even[kGroups], odd[kGroups];
  for (int i = 0; i < kGroups; ++i) even[i] = odd[i] = _mm512_setzero_ps();
  const int64_t lines = nb * 16;
  for (int64_t p = 0; p < lines; p += 2) {
    const __m512bh x0 = BroadcastPair(x + p * 4), x1 = BroadcastPair(x + p * 4 + 4);
    for (int i = 0; i < kGroups; ++i) {
      const uint8_t* q = groups[i] + p * 64;
      _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes / kGroups), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes / kGroups + 64), _MM_HINT_T0);
      even[i] = _mm512_dpbf16_ps(even[i], reinterpret_cast<__m512bh>(_mm512_load_si512(q)), x0);
      odd[i] = _mm512_dpbf16_ps(odd[i], reinterpret_cast<__m512bh>(_mm512_load_si512(q + 64)), x1);
    }
  }
  for (int i = 0; i < kGroups; ++i) _mm512_storeu_ps(outs[i], _mm512_add_ps(even[i], odd[i]));
}

// The decode form of GemmF16X16Rows<1> over kGroups streams, as GemvGroupsOf.
template <int kGroups>
void GemvF16GroupsOf(const uint8_t* const* groups, int64_t nb, const uint8_t* x, float* const* outs) {
  __m512 low[kGroups], high[kGroups];
  for (int i = 0; i < kGroups; ++i) low[i] = high[i] = _mm512_setzero_ps();
  const int64_t lines = nb * 16;
  for (int64_t p = 0; p < lines; ++p) {
    const __m512 pair = BroadcastFloatPair(x + p * 8);
    for (int i = 0; i < kGroups; ++i) {
      const uint8_t* q = groups[i] + p * 64;
      _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes / kGroups), _MM_HINT_T0);
      low[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(q))), pair, low[i]);
      high[i] =
          _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(q + 32))), pair, high[i]);
    }
  }
  for (int i = 0; i < kGroups; ++i) _mm512_storeu_ps(outs[i], AddLanePairs(low[i], high[i]));
}

// The streamed group kernels of each packed type, for GemvGroups.
template <Packed32 kType>
struct QuantGroups {
  template <int kGroups>
  static void Run(const uint8_t* const* groups, int64_t nb, const uint8_t* xq, const float* terms, float* const* outs) {
    GemvGroupsOf<kType, kGroups>(groups, nb, xq, terms, outs);
  }
};
template <bool kBf16>
struct HalfGroups {
  template <int kGroups>
  static void Run(const uint8_t* const* groups, int64_t nb, const uint8_t* xq, const float* /*terms*/,
                  float* const* outs) {
    if constexpr (kBf16) {
      GemvBf16GroupsOf<kGroups>(groups, nb, xq, outs);
    } else {
      GemvF16GroupsOf<kGroups>(groups, nb, xq, outs);
    }
  }
};

// n_groups adjacent groups as kGemvStreams streams, each a contiguous run
// (so a stream's prefetches run on into its next group); the first n_groups %
// 4 streams are one group longer and take it in a last pass of fewer streams.
// (Left-over groups as separate one-group streams had taken 15% of the decode
// kernel time, from the 11- and 15-group tasks of the expert and output matrices.)
template <class Groups>
void GemvGroups(const uint8_t* group, uint64_t group_bytes, int64_t n_groups, int64_t nb, const uint8_t* xq,
                const float* terms, float* out) {
  static_assert(kGemvStreams == 4, "the switch below covers 1-3 longer streams");
  const int64_t shorter = n_groups / kGemvStreams, longer = n_groups % kGemvStreams;
  const uint8_t* groups[kGemvStreams];
  float* outs[kGemvStreams];
  for (int64_t i = 0, first = 0; i < kGemvStreams; first += shorter + (i < longer), ++i) {
    groups[i] = group + first * group_bytes;
    outs[i] = out + 16 * first;
  }
  for (int64_t j = 0; j < shorter; ++j) {
    Groups::template Run<kGemvStreams>(groups, nb, xq, terms, outs);
    for (int i = 0; i < kGemvStreams; ++i) groups[i] += group_bytes, outs[i] += 16;
  }
  switch (longer) {
    case 1: return Groups::template Run<1>(groups, nb, xq, terms, outs);
    case 2: return Groups::template Run<2>(groups, nb, xq, terms, outs);
    case 3: return Groups::template Run<3>(groups, nb, xq, terms, outs);
    default: return;
  }
}

// Up to four activation rows (the VNNI set's packed_tile_rows).
template <Packed32 kType>
void GemmX16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
             uint64_t terms_stride, int n_x, float* out) {
  switch (n_x) {
    case 1: return GemmX16Rows<1, kType>(group, nb, xq, xq_stride, terms, terms_stride, out);
    case 2: return GemmX16Rows<2, kType>(group, nb, xq, xq_stride, terms, terms_stride, out);
    case 3: return GemmX16Rows<3, kType>(group, nb, xq, xq_stride, terms, terms_stride, out);
    default: return GemmX16Rows<4, kType>(group, nb, xq, xq_stride, terms, terms_stride, out);
  }
}

// Any n_x (the AMX set's tiles of up to 16 rows included) in tiles of 4:
// packed Q5_0 and IQ4_NL, which the AMX set takes from this one.
template <Packed32 kType>
void GemmQuantInTilesOf4(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
                         uint64_t terms_stride, int n_x, float* out) {
  for (int r = 0; r < n_x; r += 4) {
    GemmX16<kType>(group, nb, xq + r * xq_stride, xq_stride, terms + r * terms_stride, terms_stride,
                   std::min(4, n_x - r), out + r * 16);
  }
}
// One 16-lane accumulator per activation row and two sets of them (even and
// odd columns), so eight FMA chains are in flight.
template <int kRows>
void GemmF32X16Rows(const float* wt, int64_t cols, const float* x, int64_t ldx, float* out) {
  __m512 even[kRows], odd[kRows];
  for (int r = 0; r < kRows; ++r) even[r] = odd[r] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 2 <= cols; c += 2) {
    const __m512 w0 = _mm512_load_ps(wt + c * 16), w1 = _mm512_load_ps(wt + c * 16 + 16);
    for (int r = 0; r < kRows; ++r) {
      even[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + c]), w0, even[r]);
      odd[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + c + 1]), w1, odd[r]);
    }
  }
  if (c < cols) {
    const __m512 w0 = _mm512_load_ps(wt + c * 16);
    for (int r = 0; r < kRows; ++r) even[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + c]), w0, even[r]);
  }
  for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(out + r * 16, _mm512_add_ps(even[r], odd[r]));
}

void GemmF32X16(const float* wt, int64_t cols, const float* x, int64_t ldx, int n_x, float* out) {
  switch (n_x) {
    case 1: return GemmF32X16Rows<1>(wt, cols, x, ldx, out);
    case 2: return GemmF32X16Rows<2>(wt, cols, x, ldx, out);
    case 3: return GemmF32X16Rows<3>(wt, cols, x, ldx, out);
    default: return GemmF32X16Rows<4>(wt, cols, x, ldx, out);
  }
}

// Heads of up to 64 dimensions, up to four query heads per pass: each cached
// row is loaded once (four registers) for all of them.
// The hardware prefetchers fall behind on the cached rows, although a head's
// rows are consecutive (runtime::KvCache): the 64 floats of the row this many
// rows ahead are requested explicitly (prefetches past the end do not fault).
// kernels_bench attention/avx512 at ctx 1024 streamed 5.4-5.6 GB/s without
// the request and 22-27 GB/s with it; 32 rows ahead measured the same as 16.
constexpr int64_t kRowsAhead = 16;

// Row t of the cache (up to 64 floats, under the masks) into rv, after
// requesting the row kRowsAhead further on.
inline void LoadCachedRow(const float* rows, int64_t t, uint64_t stride, const __mmask16* m, __m512 rv[4]) {
  const float* ahead = rows + (t + kRowsAhead) * stride;
  for (int j = 0; j < 4; ++j) _mm_prefetch(reinterpret_cast<const char*>(ahead + 16 * j), _MM_HINT_T0);
  const float* r = rows + t * stride;
  for (int j = 0; j < 4; ++j) rv[j] = _mm512_maskz_loadu_ps(m[j], r + 16 * j);
}

template <int kHeads>
void DotRows64(const float* q, uint64_t ld_q, const float* rows, uint64_t stride, int64_t n, const __mmask16* m,
               float* out, uint64_t ld_out) {
  __m512 qv[kHeads][4];
  for (int h = 0; h < kHeads; ++h) {
    for (int j = 0; j < 4; ++j) qv[h][j] = _mm512_maskz_loadu_ps(m[j], q + h * ld_q + 16 * j);
  }
  for (int64_t t = 0; t < n; ++t) {
    __m512 rv[4];
    LoadCachedRow(rows, t, stride, m, rv);
    for (int h = 0; h < kHeads; ++h) {
      __m512 acc = _mm512_mul_ps(qv[h][0], rv[0]);
      for (int j = 1; j < 4; ++j) acc = _mm512_fmadd_ps(qv[h][j], rv[j], acc);
      out[h * ld_out + t] = _mm512_reduce_add_ps(acc);
    }
  }
}

template <int kHeads>
void WeightedRows64(const float* w, uint64_t ld_w, const float* rows, uint64_t stride, int64_t n, const __mmask16* m,
                    float* out, uint64_t ld_out) {
  __m512 acc[kHeads][4];
  for (int h = 0; h < kHeads; ++h) {
    for (int j = 0; j < 4; ++j) acc[h][j] = _mm512_setzero_ps();
  }
  for (int64_t t = 0; t < n; ++t) {
    __m512 rv[4];
    LoadCachedRow(rows, t, stride, m, rv);
    for (int h = 0; h < kHeads; ++h) {
      const __m512 wt = _mm512_set1_ps(w[h * ld_w + t]);
      for (int j = 0; j < 4; ++j) acc[h][j] = _mm512_fmadd_ps(wt, rv[j], acc[h][j]);
    }
  }
  for (int h = 0; h < kHeads; ++h) {
    for (int j = 0; j < 4; ++j) _mm512_mask_storeu_ps(out + h * ld_out + 16 * j, m[j], acc[h][j]);
  }
}

void LaneMasks(int64_t dim, __mmask16* m) {
  for (int j = 0; j < 4; ++j) {
    const int64_t left = std::clamp<int64_t>(dim - 16 * j, 0, 16);
    m[j] = static_cast<__mmask16>((1u << left) - 1);
  }
}

void DotRowsF32(const float* q, uint64_t ld_q, int n_q, const float* rows, uint64_t stride, int64_t n, int64_t dim,
                float* out, uint64_t ld_out) {
  if (dim > 64) return DotRowsEach<DotF32>(q, ld_q, n_q, rows, stride, n, dim, out, ld_out);
  __mmask16 m[4];
  LaneMasks(dim, m);
  ForEachHeadPass(n_q, [&](auto heads, int h) {
    DotRows64<heads>(q + h * ld_q, ld_q, rows, stride, n, m, out + h * ld_out, ld_out);
  });
}

void WeightedRowsF32(const float* w, uint64_t ld_w, int n_q, const float* rows, uint64_t stride, int64_t n,
                     int64_t dim, float* out, uint64_t ld_out) {
  // 64 columns at a time stay in registers across all rows.
  for (int64_t c = 0; c < dim; c += 64) {
    __mmask16 m[4];
    LaneMasks(dim - c, m);
    ForEachHeadPass(n_q, [&](auto heads, int h) {
      WeightedRows64<heads>(w + h * ld_w, ld_w, rows + c, stride, n, m, out + h * ld_out + c, ld_out);
    });
  }
}

// exp(x) as 2^k * p(r), k = round(x log2 e), r = x - k ln 2 in two steps,
// p Cephes' expf polynomial; scalef applies 2^k and underflows to zero.
__m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));  // exp below this is 0 in float
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, k);
}

__mmask16 TailMask(int64_t t, int64_t n) {
  return t + 16 <= n ? 0xFFFF : static_cast<__mmask16>((1u << (n - t)) - 1);
}

void SwiGluF32(float* g, const float* u, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(i, n);
    const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 sigmoid = _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_mul_ps(x, sigmoid), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

void SoftmaxF32(float* s, int64_t n, float scale) {
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t t = 0; t < n; t += 16) {
    const __mmask16 m = TailMask(t, n);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + t), vscale);
    _mm512_mask_storeu_ps(s + t, m, v);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, v);
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
  for (int64_t t = 0; t < n; t += 16) {
    const __mmask16 m = TailMask(t, n);
    const __m512 e = _mm512_maskz_mov_ps(m, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + t), mx)));
    _mm512_mask_storeu_ps(s + t, m, e);
    sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  }
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi))));
  for (int64_t t = 0; t < n; t += 16) {
    const __mmask16 m = TailMask(t, n);
    _mm512_mask_storeu_ps(s + t, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + t), inv));
  }
}

}  // namespace

const KernelSet* Avx512Kernels() {
  // Checked before the table is built: building it runs code compiled for
  // AVX-512, which would fault on a CPU without it.
  const CpuFeatures& f = GetCpuFeatures();
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.f16c)) return nullptr;
  static const KernelSet set = [] {
    KernelSet s = {"avx512", DotF32, DotF16F32, DotBf16F32, AxpyF32, F16ToF32, Bf16ToF32, Q8_0ToF32, Q4_0ToF32,
                   QuantizeQ8_0, DotQ8_0Q8_0, DotQ4_0Q8_0, Dot4Q8_0Q8_0, Dot4Q4_0Q8_0,
                   QuantizeQ8_K, OneRow<DotK4Rows<BlockQ4_K, 1>>, OneRow<DotK4Rows<BlockQ5_K, 1>>,
                   OneRow<DotQ6_KRows<1>>, DotK4Rows<BlockQ4_K, 4>,
                   DotK4Rows<BlockQ5_K, 4>, DotQ6_KRows<4>, GemmX16<Packed32::kQ8_0>, GemmX16<Packed32::kQ4_0>,
                   GemmF32X16, DotRowsF32, WeightedRowsF32, SoftmaxF32, SwiGluF32, GemvGroups<QuantGroups<Packed32::kQ8_0>>,
                   GemvGroups<QuantGroups<Packed32::kQ4_0>>};
    s.gemm_f16_x16 = GemmX16InTilesOf4<GemmF16X16Rows<1>, GemmF16X16Rows<2>, GemmF16X16Rows<3>, GemmF16X16Rows<4>>;
    s.gemv_f16_groups = GemvGroups<HalfGroups<false>>;
    s.gemm_q4_K_x16 = GemmX16InTilesOf4<GemmKQuantX16Rows<4, 1>, GemmKQuantX16Rows<4, 2>, GemmKQuantX16Rows<4, 3>,
                                        GemmKQuantX16Rows<4, 4>>;
    s.gemm_q5_K_x16 = GemmX16InTilesOf4<GemmKQuantX16Rows<5, 1>, GemmKQuantX16Rows<5, 2>, GemmKQuantX16Rows<5, 3>,
                                        GemmKQuantX16Rows<5, 4>>;
    s.gemm_q5_0_x16 = GemmQuantInTilesOf4<Packed32::kQ5_0>;
    s.gemv_q5_0_groups = GemvGroups<QuantGroups<Packed32::kQ5_0>>;
    s.gemm_iq4_nl_x16 = GemmQuantInTilesOf4<Packed32::kIQ4_NL>;
    s.gemv_iq4_nl_groups = GemvGroups<QuantGroups<Packed32::kIQ4_NL>>;
    s.gemm_q2_K_x16 = GemmX16InTilesOf4<GemmKQuantX16Rows<2, 1>, GemmKQuantX16Rows<2, 2>, GemmKQuantX16Rows<2, 3>,
                                        GemmKQuantX16Rows<2, 4>>;
    s.gemm_q3_K_x16 = GemmX16InTilesOf4<GemmKQuantX16Rows<3, 1>, GemmKQuantX16Rows<3, 2>, GemmKQuantX16Rows<3, 3>,
                                        GemmKQuantX16Rows<3, 4>>;
    s.gemm_iq4_xs_x16 =
        GemmX16InTilesOf4<GemmKQuantX16Rows<kIQ4_XSBits, 1>, GemmKQuantX16Rows<kIQ4_XSBits, 2>,
                          GemmKQuantX16Rows<kIQ4_XSBits, 3>, GemmKQuantX16Rows<kIQ4_XSBits, 4>>;
    s.gemm_q6_K_x16 = GemmX16InTilesOf4<GemmKQuantX16Rows<6, 1>, GemmKQuantX16Rows<6, 2>, GemmKQuantX16Rows<6, 3>,
                                        GemmKQuantX16Rows<6, 4>>;
    SetFileLayoutDots(s);

    if (GetCpuFeatures().avx512bf16) {  // else BF16 weights stay in the file layout
      s.gemm_bf16_x16 =
          GemmX16InTilesOf4<GemmBf16X16Rows<1>, GemmBf16X16Rows<2>, GemmBf16X16Rows<3>, GemmBf16X16Rows<4>>;
      s.gemv_bf16_groups = GemvGroups<HalfGroups<true>>;
    }
    return s;
  }();
  return &set;
}

}  // namespace micromoe::kernels
