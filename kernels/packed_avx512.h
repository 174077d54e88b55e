// AVX-512 VNNI pieces of the packed Q8_0 / Q4_0 kernels (layout in
// packed.h), shared by avx512.cc and amx.cc, the two files compiled with
// AVX-512 flags. Internal linkage: each includes its own copy.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/packed.h"

namespace micromoe::kernels {
namespace {

// Requests the lines of block b of a packed group `ahead` bytes further on
// (in layout order: for an even b its pair's scale line, then its quants).
template <int kChunkBytes>
inline void PrefetchBlockAhead(const uint8_t* group, int64_t b, int ahead) {
  const uint8_t* q = group + PackedQuantsOffset(b, kChunkBytes) + ahead;
  if (b % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(q - 64), _MM_HINT_T0);
  for (int k = 0; k < kChunkBytes; k += 64) _mm_prefetch(reinterpret_cast<const char*>(q + k), _MM_HINT_T0);
}

// Block b's 16 weight-row scales as floats.
template <int kChunkBytes>
inline __m512 LoadBlockScales(const uint8_t* group, int64_t b) {
  return _mm512_cvtph_ps(
      _mm256_load_si256(reinterpret_cast<const __m256i*>(group + PackedScalesOffset(b, kChunkBytes))));
}

// Packed block q as eight 64-byte vectors of unsigned weights: vector k holds
// weights 4k..4k+3 of each of the 16 rows (for Q4_0 the low nibbles give
// vectors 0-3 and the high nibbles 4-7).
template <bool kQ4>
inline void LoadPackedBlock(const uint8_t* q, __m512i w[8]) {
  if constexpr (kQ4) {
    const __m512i low_mask = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; ++k) {
      const __m512i v = _mm512_load_si512(q + k * 64);
      w[k] = _mm512_and_si512(v, low_mask);
      w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low_mask);
    }
  } else {
    for (int k = 0; k < 8; ++k) w[k] = _mm512_load_si512(q + k * 64);
  }
}

// The 32 codes of one Q8_0 activation block as eight broadcast dwords.
inline void BroadcastCodes(const uint8_t* codes, __m512i xb[8]) {
  for (int k = 0; k < 8; ++k) {
    int32_t v;
    __builtin_memcpy(&v, codes + 4 * k, 4);
    xb[k] = _mm512_set1_epi32(v);
  }
}

// Lane i: weight row i's block against the activation codes (u8 x s8), in two
// dpbusd chains so consecutive instructions do not wait on each other.
inline __m512i DotPackedBlock(const __m512i w[8], const __m512i xb[8]) {
  __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], xb[0]);
  __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[1], xb[1]);
  for (int k = 2; k < 8; k += 2) {
    s0 = _mm512_dpbusd_epi32(s0, w[k], xb[k]);
    s1 = _mm512_dpbusd_epi32(s1, w[k + 1], xb[k + 1]);
  }
  return _mm512_add_epi32(s0, s1);
}

}  // namespace
}  // namespace micromoe::kernels
