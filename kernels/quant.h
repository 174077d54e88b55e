// Block layouts of the quantized weight types (as GGUF defines them) and
// half-precision conversions. Plain data; used by every kernel back-end.
// The functions are `static` so that a copy compiled with AVX flags in an
// ISA-specific file can never be picked by the linker for portable code.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace micromoe::kernels {

constexpr int kQK = 32;     // elements per Q8_0 / Q4_0 block
constexpr int kQK_K = 256;  // elements per K-quant super-block

struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 {
  uint16_t d;             // fp16 scale
  uint8_t qs[kQK / 2];    // element j in the low nibble of qs[j], j+16 in the high nibble; value = q - 8
};
static_assert(sizeof(BlockQ4_0) == 18);

// The other 32-element types of GGUF files, multiplied against Q8_0
// activations in the file layout (kernel_set.h): element j < 16 in the low
// nibble of qs[j], j + 16 in the high nibble; the Q5 types take bit j of qh
// (little-endian) as element j's fifth bit.
struct BlockQ4_1 {
  uint16_t d, m;  // fp16; value = d * q + m, q in 0..15
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

struct BlockQ5_0 {
  uint16_t d;  // fp16; value = d * (q - 16), q in 0..31
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

struct BlockQ5_1 {
  uint16_t d, m;  // fp16; value = d * q + m, q in 0..31
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// IQ4_NL: value = d * kIQ4NLValues[q], q the nibble of element j as in Q4_0.
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockIQ4_NL) == 18);
constexpr int8_t kIQ4NLValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// IQ4_XS: 8 sub-blocks of 32 as IQ4_NL's (elements 32b + j < 16 in the low
// nibble of qs[16b + j], 32b + 16 + j in the high nibble), each with a 6-bit
// scale s_b: value = d * (s_b - 32) * kIQ4NLValues[q] (IQ4_XSScale gives s_b - 32).
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;  // bits 2b, 2b + 1: the top 2 bits of sub-block b's scale
  uint8_t scales_l[kQK_K / 64];  // the low 4 bits of sub-block b's scale: nibble b % 2 of byte b / 2
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockIQ4_XS) == 136);

static inline int IQ4_XSScale(const BlockIQ4_XS& b, int sub) {
  return (((b.scales_l[sub / 2] >> (4 * (sub % 2))) & 0x0F) | ((b.scales_h >> (2 * sub)) & 3) << 4) - 32;
}

// Element j's stored q of a Q4_1 / Q5_0 / Q5_1 block (0..15 or 0..31).
template <class Block>
static inline int StoredQuant(const Block& b, int j) {
  const int nibble = j < kQK / 2 ? b.qs[j] & 0x0F : b.qs[j - kQK / 2] >> 4;
  if constexpr (std::is_same_v<Block, BlockQ4_1>) {
    return nibble;
  } else {
    return nibble | ((b.qh[j / 8] >> (j % 8)) & 1) << 4;
  }
}

// Q2_K and Q3_K: 16 sub-blocks of 16. Element e = 128h + 32j + 16g + l (h in
// 0..1, j in 0..3, g in 0..1, l in 0..15) has its 2 low bits at bits 2j, 2j +
// 1 of qs[32h + 16g + l] and belongs to sub-block 8h + 2j + g.
//   Q2_K: value = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4).
//   Q3_K: value = d * (scale_s - 32) * (q - 4 (hmask[16g + l] bit 4h + j clear) or q (set)),
//     with scale_s 6 bits: Q3_KScale.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d, dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

// Sub-block s's signed scale (scale_s - 32). Of the 6-bit scale_s, the low 4
// bits are the low (s < 8) or high (s >= 8) nibble of scales[s % 8], and the
// top 2 bits are bits 2 (s / 4) and 2 (s / 4) + 1 of scales[8 + s % 4].
static inline int Q3_KScale(const BlockQ3_K& b, int s) {
  const int low = s < 8 ? b.scales[s] & 0x0F : b.scales[s - 8] >> 4;
  return (low | ((b.scales[8 + s % 4] >> (2 * (s / 4))) & 3) << 4) - 32;
}

// Element e's quant of a Q2_K / Q3_K block (Q3_K: with its third bit, -4..3).
template <class Block>
static inline int LowKQuant(const Block& b, int e) {
  const int h = e / 128, j = e % 128 / 32, g = e % 32 / 16, l = e % 16;
  const int q = (b.qs[32 * h + 16 * g + l] >> (2 * j)) & 3;
  if constexpr (std::is_same_v<Block, BlockQ3_K>) {
    return (b.hmask[16 * g + l] >> (4 * h + j)) & 1 ? q : q - 4;
  } else {
    return q;
  }
}

struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// Element e of a Q6_K block as stored, q in 0..63 (value d * scales[e / 16]
// * (q - 32)): for e = 128h + 32g + l, the low 4 bits are in ql[64h + 32 (g %
// 2) + l] (low nibble for g < 2, high for g >= 2) and the top 2 bits at bits
// 2g, 2g + 1 of qh[32h + l].
static inline int Q6_KValue(const BlockQ6_K& b, int e) {
  const int h = e / 128, g = e % 128 / 32, l = e % 32;
  const int low = (b.ql[64 * h + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0x0F;
  return low | (((b.qh[32 * h + l] >> (2 * g)) & 3) << 4);
}

// Sets element e to q, where its bits are still zero.
static inline void SetQ6_KValue(BlockQ6_K& b, int e, int q) {
  const int h = e / 128, g = e % 128 / 32, l = e % 32;
  b.ql[64 * h + 32 * (g % 2) + l] |= static_cast<uint8_t>((q & 0x0F) << (4 * (g / 2)));
  b.qh[32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * g));
}

// Activations for the K-quant dot products (not a weight type here): codes
// q with value d * q, and the sum of each 16 consecutive codes, so the
// products can apply per-sub-block offsets (Q4_K/Q5_K mins, Q6_K's -32)
// without touching the codes again.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292);

static inline float Fp16ToFp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3FF;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even.
static inline uint16_t Fp32ToFp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = x & 0x7FFFFF;
  if (((x >> 23) & 0xFF) == 0xFF) return static_cast<uint16_t>(sign | 0x7C00 | (mant ? 0x200 : 0));
  if (exp >= 0x1F) return static_cast<uint16_t>(sign | 0x7C00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    const int shift = 14 - exp;
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;
  return static_cast<uint16_t>(half);
}

static inline float Bf16ToFp32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

static inline uint16_t Fp32ToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((x >> 16) | 64);  // quiet NaN
  return static_cast<uint16_t>((x + (0x7FFF + ((x >> 16) & 1))) >> 16);
}

}  // namespace micromoe::kernels
