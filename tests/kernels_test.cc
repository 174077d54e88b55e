// Specification of the kernels (kernels/kernels.h, kernel_set.h, quant.h,
// quantize.h).
//
// Every back-end this CPU can run is checked against plain references written
// here from the format definitions -- never against another back-end -- on
// sizes that exercise vector tails, on blocks built by hand with known values,
// and on random data with tolerances derived from the arithmetic.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gguf/types.h"
#include "gtest/gtest.h"
#include "kernels/cpu_features.h"
#include "kernels/kernel_set.h"
#include "kernels/kernels.h"
#include "kernels/packed.h"
#include "kernels/quant.h"
#include "kernels/quantize.h"

namespace micromoe::kernels {
namespace {

using gguf::TensorType;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 decoded from its definition: (-1)^s * 2^(e-15) * 1.m, or
// 2^-14 * 0.m for e == 0.
float RefHalf(uint16_t h) {
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  double v;
  if (e == 0) {
    v = std::ldexp(static_cast<double>(m), -24);
  } else if (e == 0x1F) {
    v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else {
    v = std::ldexp(static_cast<double>(1024 + m), e - 25);
  }
  return static_cast<float>((h & 0x8000) ? -v : v);
}

// bfloat16 is the top half of a binary32.
float RefBf16(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

// Exact equality, treating any NaN as equal to any NaN (conversions may quiet them).
bool SameFloat(float a, float b) { return (std::isnan(a) && std::isnan(b)) || Bits(a) == Bits(b); }

std::vector<float> RandomFloats(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

uint16_t RandomScale(std::mt19937& rng) {
  // Positive fp16 scales between about 2^-7 and 2^-4.
  return static_cast<uint16_t>(0x2000 + std::uniform_int_distribution<int>(0, 0x0FFF)(rng));
}

// ---------------------------------------------------------------------------
// Reference dequantization of whole rows, from the block layouts alone.

std::vector<float> RefDequantize(TensorType type, const uint8_t* src, int64_t n) {
  std::vector<float> out(n);
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out.data(), src, n * sizeof(float));
      break;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = type == TensorType::kF16 ? RefHalf(h) : RefBf16(h);
      }
      break;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint8_t* blk = src + b * 34;
        uint16_t d;
        std::memcpy(&d, blk, 2);
        for (int j = 0; j < 32; ++j) out[b * 32 + j] = RefHalf(d) * static_cast<int8_t>(blk[2 + j]);
      }
      break;
    case TensorType::kQ4_0:
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint8_t* blk = src + b * 18;
        uint16_t d;
        std::memcpy(&d, blk, 2);
        for (int j = 0; j < 16; ++j) {
          out[b * 32 + j] = RefHalf(d) * ((blk[2 + j] & 0x0F) - 8);
          out[b * 32 + j + 16] = RefHalf(d) * ((blk[2 + j] >> 4) - 8);
        }
      }
      break;
    case TensorType::kQ4_1:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1: {
      // Q4_1: d, m, qs[16] (20 bytes); Q5_0: d, qh[4], qs[16] (22); Q5_1: d,
      // m, qh[4], qs[16] (24). Element j < 16 is the low nibble of qs[j], j + 16
      // the high nibble; the Q5 types add bit j of the little-endian qh as 16.
      const bool has_m = type != TensorType::kQ5_0, has_qh = type != TensorType::kQ4_1;
      const int block_bytes = type == TensorType::kQ4_1 ? 20 : type == TensorType::kQ5_0 ? 22 : 24;
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint8_t* blk = src + b * block_bytes;
        uint16_t d, m = 0;
        std::memcpy(&d, blk, 2);
        if (has_m) std::memcpy(&m, blk + 2, 2);
        const uint8_t* qh = blk + (has_m ? 4 : 2);
        const uint8_t* qs = qh + (has_qh ? 4 : 0);
        for (int j = 0; j < 32; ++j) {
          int q = j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4;
          if (has_qh) q += ((qh[j / 8] >> (j % 8)) & 1) * 16;
          out[b * 32 + j] = has_m ? RefHalf(d) * q + RefHalf(m) : RefHalf(d) * (q - 16);
        }
      }
      break;
    }
    case TensorType::kIQ4_NL: {
      static const int kValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint8_t* blk = src + b * 18;
        uint16_t d;
        std::memcpy(&d, blk, 2);
        for (int j = 0; j < 16; ++j) {
          out[b * 32 + j] = RefHalf(d) * kValues[blk[2 + j] & 0x0F];
          out[b * 32 + j + 16] = RefHalf(d) * kValues[blk[2 + j] >> 4];
        }
      }
      break;
    }
    case TensorType::kIQ4_XS:
      // 136 bytes: d, scales_h (uint16), scales_l[4], qs[128]. Sub-block s of
      // 32 has the 6-bit scale (nibble s % 2 of scales_l[s / 2]) | (bits 2s,
      // 2s + 1 of scales_h) << 4, minus 32, and IQ4_NL's values in qs[16s..].
      for (int64_t b = 0; b < n / 256; ++b) {
        static const int kValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
        const uint8_t* blk = src + b * 136;
        uint16_t d, high;
        std::memcpy(&d, blk, 2);
        std::memcpy(&high, blk + 2, 2);
        for (int sub = 0; sub < 8; ++sub) {
          const int scale = (((blk[4 + sub / 2] >> (4 * (sub % 2))) & 15) | (((high >> (2 * sub)) & 3) << 4)) - 32;
          for (int j = 0; j < 16; ++j) {
            const uint8_t q = blk[8 + 16 * sub + j];
            out[b * 256 + 32 * sub + j] = RefHalf(d) * scale * kValues[q & 15];
            out[b * 256 + 32 * sub + 16 + j] = RefHalf(d) * scale * kValues[q >> 4];
          }
        }
      }
      break;
    case TensorType::kQ2_K:
    case TensorType::kQ3_K:
      // Q2_K (84 bytes): scales[16], qs[64], d, dmin. Q3_K (110): hmask[32],
      // qs[64], scales[12], d. In each half h of 128 and each j < 4, the 32
      // elements 128h + 32j + i (i < 32) take bits 2j, 2j + 1 of qs[32h + i]
      // and the scales of sub-blocks 8h + 2j + i / 16; Q3_K subtracts 4 unless
      // bit 4h + j of hmask[i] is set.
      for (int64_t b = 0; b < n / 256; ++b) {
        const bool q3 = type == TensorType::kQ3_K;
        const uint8_t* blk = src + b * (q3 ? 110 : 84);
        const uint8_t* qs = blk + (q3 ? 32 : 16);
        uint16_t d, dmin = 0;
        std::memcpy(&d, blk + (q3 ? 108 : 80), 2);
        if (!q3) std::memcpy(&dmin, blk + 82, 2);
        for (int h = 0; h < 2; ++h) {
          for (int j = 0; j < 4; ++j) {
            for (int i = 0; i < 32; ++i) {
              const int sub = 8 * h + 2 * j + i / 16;
              int q = (qs[32 * h + i] >> (2 * j)) & 3;
              float v;
              if (q3) {
                if (!((blk[i] >> (4 * h + j)) & 1)) q -= 4;
                // 6-bit scale: low nibble of byte sub % 8 (high for sub >= 8)
                // of scales (at 96), top 2 bits from byte 8 + sub % 4.
                const uint8_t* sc = blk + 96;
                const int low = sub < 8 ? sc[sub] & 0x0F : sc[sub - 8] >> 4;
                const int scale = (low | (((sc[8 + sub % 4] >> (2 * (sub / 4))) & 3) << 4)) - 32;
                v = RefHalf(d) * scale * q;
              } else {
                v = RefHalf(d) * (blk[sub] & 0x0F) * q - RefHalf(dmin) * (blk[sub] >> 4);
              }
              out[b * 256 + 128 * h + 32 * j + i] = v;
            }
          }
        }
      }
      break;
    default:
      ADD_FAILURE() << "no reference for type " << static_cast<int>(type);
  }
  return out;
}

uint64_t RowBytes(TensorType type, int64_t cols) {
  const gguf::TypeTraits* t = gguf::FindTypeTraits(static_cast<uint32_t>(type));
  return static_cast<uint64_t>(cols) / t->block_elements * t->block_bytes;
}

// ---------------------------------------------------------------------------
// Conversions in quant.h (not back-end specific).

TEST(HalfTest, EveryHalfDecodesAsDefinedAndRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFp32(static_cast<uint16_t>(h));
    ASSERT_TRUE(SameFloat(f, RefHalf(static_cast<uint16_t>(h)))) << std::hex << h;
    if (std::isnan(f)) {
      const uint16_t back = Fp32ToFp16(f);
      EXPECT_EQ(back & 0x7C00, 0x7C00) << std::hex << h;
      EXPECT_NE(back & 0x03FF, 0) << std::hex << h;
      continue;
    }
    ASSERT_EQ(Fp32ToFp16(f), h) << std::hex << h;
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  const float ulp1 = std::ldexp(1.0f, -10);  // spacing of halves in [1, 2)
  EXPECT_EQ(Fp32ToFp16(1.0f), 0x3C00);
  EXPECT_EQ(Fp32ToFp16(1.0f + ulp1 / 2), 0x3C00);                       // tie, down to even
  EXPECT_EQ(Fp32ToFp16(1.0f + 3 * ulp1 / 2), 0x3C02);                   // tie, up to even
  EXPECT_EQ(Fp32ToFp16(1.0f + ulp1 / 2 + std::ldexp(1.0f, -20)), 0x3C01);  // above the tie
  EXPECT_EQ(Fp32ToFp16(1.0f + ulp1 / 2 - std::ldexp(1.0f, -20)), 0x3C00);  // below the tie
  EXPECT_EQ(Fp32ToFp16(-2.0f), 0xC000);
  EXPECT_EQ(Fp32ToFp16(0.0f), 0x0000);
  EXPECT_EQ(Fp32ToFp16(-0.0f), 0x8000);
  EXPECT_EQ(Fp32ToFp16(65504.0f), 0x7BFF);   // largest half
  EXPECT_EQ(Fp32ToFp16(65519.0f), 0x7BFF);   // below the tie with infinity
  EXPECT_EQ(Fp32ToFp16(65520.0f), 0x7C00);   // tie: 0x7BFF is odd, so up to infinity
  EXPECT_EQ(Fp32ToFp16(1e6f), 0x7C00);
  EXPECT_EQ(Fp32ToFp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1023.5f, -24)), 0x0400);  // subnormal tie, up to even
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -25)), 0x0000);  // tie, down to even (zero)
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f + 1.0f / 1024, -25)), 0x0001);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 subnormal ulps: tie, up to even
  EXPECT_EQ(Fp32ToFp16(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 ulps: tie, down to even
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -30)), 0x0000);
  const uint16_t nan = Fp32ToFp16(kNaN);
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
}

#if defined(__FLT16_MAX__)
// The compiler's own _Float16 conversion (IEEE round to nearest even) as an
// independent reference, over a spread of float bit patterns of every exponent.
TEST(HalfTest, RoundingAgreesWithTheCompilersFloat16) {
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 997) {
    const float f = FromBits(static_cast<uint32_t>(u));
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t expect;
    std::memcpy(&expect, &h, 2);
    ASSERT_EQ(Fp32ToFp16(f), expect) << std::hex << u;
  }
}
#endif

// Round to nearest even by definition: the nearer of the two bf16 values that
// bracket f (compared in double), the even one on a tie.
uint16_t RefFp32ToBf16(float f) {
  const uint32_t x = Bits(f);
  const uint32_t lo = x & 0xFFFF0000u;
  if (lo == x) return static_cast<uint16_t>(x >> 16);
  const uint32_t hi = lo + 0x10000u;  // next magnitude up (may become infinity)
  const double dl = std::fabs(static_cast<double>(f) - FromBits(lo));
  const double dh = std::fabs(static_cast<double>(FromBits(hi)) - f);
  if (dl < dh) return static_cast<uint16_t>(lo >> 16);
  if (dh < dl) return static_cast<uint16_t>(hi >> 16);
  return static_cast<uint16_t>(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

TEST(Bf16Test, RoundingAgreesWithTheDefinition) {
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 997) {
    const float f = FromBits(static_cast<uint32_t>(u));
    if (std::isnan(f) || std::isinf(f)) continue;
    // Near the top, the upper neighbour is infinity; distance to it is infinite
    // in double, but IEEE rounding treats it as the next power of two.
    if ((Bits(f) & 0x7FFFFFFF) >= 0x7F7F0000u) continue;
    ASSERT_EQ(Fp32ToBf16(f), RefFp32ToBf16(f)) << std::hex << u;
  }
}

TEST(Bf16Test, EveryBf16RoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Bf16ToFp32(static_cast<uint16_t>(h));
    ASSERT_EQ(Bits(f), h << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Bf16ToFp32(Fp32ToBf16(f)))) << std::hex << h;
      continue;
    }
    ASSERT_EQ(Fp32ToBf16(f), h) << std::hex << h;
  }
}

TEST(Bf16Test, RoundsToNearestEven) {
  const float ulp1 = std::ldexp(1.0f, -7);  // spacing of bf16 in [1, 2)
  EXPECT_EQ(Fp32ToBf16(1.0f), 0x3F80);
  EXPECT_EQ(Fp32ToBf16(1.0f + ulp1 / 2), 0x3F80);                           // tie, down to even
  EXPECT_EQ(Fp32ToBf16(1.0f + 3 * ulp1 / 2), 0x3F82);                       // tie, up to even
  EXPECT_EQ(Fp32ToBf16(1.0f + ulp1 / 2 + std::ldexp(1.0f, -20)), 0x3F81);  // above the tie
  EXPECT_EQ(Fp32ToBf16(-2.0f), 0xC000);
  EXPECT_EQ(Fp32ToBf16(3.140625f), 0x4049);  // exactly representable
  EXPECT_EQ(Fp32ToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(Fp32ToBf16(std::numeric_limits<float>::max()), 0x7F80);  // above the tie with infinity
  const uint16_t nan = Fp32ToBf16(kNaN);
  EXPECT_EQ(nan & 0x7F80, 0x7F80);
  EXPECT_NE(nan & 0x007F, 0);
  // A signalling NaN whose payload sits only in the low half must stay a NaN.
  EXPECT_TRUE(std::isnan(Bf16ToFp32(Fp32ToBf16(FromBits(0x7F800001)))));
}

// ---------------------------------------------------------------------------
// Per back-end primitives.

const KernelSet* FindBackend(const std::string& name) {
  if (name == "scalar") return &ScalarKernels();
  if (name == "avx2") return Avx2Kernels();
  if (name == "avx512") return Avx512Kernels();
  if (name == "amx") return AmxKernels();
  if (name == "amx_emulated") return AmxEmulatedKernels();
  return nullptr;
}

class KernelSetTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ks_ = FindBackend(GetParam());
    if (ks_ == nullptr) GTEST_SKIP() << GetParam() << " is not available on this CPU";
  }
  const KernelSet* ks_ = nullptr;
  std::mt19937 rng_{12345};
};

std::vector<int64_t> VectorSizes() {
  std::vector<int64_t> sizes;
  for (int64_t n = 1; n <= 70; ++n) sizes.push_back(n);
  for (int64_t n : {127, 129, 255, 1023, 4097}) sizes.push_back(n);
  return sizes;
}

TEST_P(KernelSetTest, DotF32MatchesDoubleReference) {
  constexpr int kPad = 16;
  for (int64_t n : VectorSizes()) {
    std::vector<float> a = RandomFloats(rng_, n), b = RandomFloats(rng_, n);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += static_cast<double>(a[i]) * b[i];
      mag += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    // NaN past the end: reading (and summing) beyond n would show.
    a.resize(n + kPad, kNaN);
    b.resize(n + kPad, kNaN);
    const float got = ks_->dot_f32(a.data(), b.data(), n);
    EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-7) << "n=" << n;
  }
}

TEST_P(KernelSetTest, AxpyF32MatchesReferenceAndLeavesTheRestAlone) {
  constexpr int kPad = 16;
  constexpr float kGuard = 12345.0f;
  for (int64_t n : VectorSizes()) {
    const std::vector<float> x = RandomFloats(rng_, n);
    std::vector<float> y = RandomFloats(rng_, n);
    const float a = std::uniform_real_distribution<float>(-2.0f, 2.0f)(rng_);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = y[i] + static_cast<double>(a) * x[i];
    y.resize(n + kPad, kGuard);
    ks_->axpy_f32(a, x.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double tol = 2e-7 * (std::fabs(ref[i]) + std::fabs(static_cast<double>(a) * x[i])) + 1e-12;
      ASSERT_NEAR(y[i], ref[i], tol) << "n=" << n << " i=" << i;
    }
    for (int64_t i = n; i < n + kPad; ++i) ASSERT_EQ(y[i], kGuard) << "n=" << n << " wrote past the end";
  }
}

TEST_P(KernelSetTest, F16ToF32DecodesEveryHalf) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> out(all.size());
  ks_->f16_to_f32(all.data(), out.data(), static_cast<int64_t>(all.size()));
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_TRUE(SameFloat(out[h], RefHalf(static_cast<uint16_t>(h))))
        << std::hex << h << " gave " << out[h];
  }
}

TEST_P(KernelSetTest, HalfConversionsHandleTails) {
  constexpr float kGuard = -777.0f;
  for (int64_t n = 1; n <= 40; ++n) {
    std::vector<uint16_t> src(n);
    for (int64_t i = 0; i < n; ++i) src[i] = static_cast<uint16_t>(0x3C00 + 37 * i);  // 1.0 upwards
    std::vector<float> f16(n + 16, kGuard), bf16(n + 16, kGuard);
    ks_->f16_to_f32(src.data(), f16.data(), n);
    ks_->bf16_to_f32(src.data(), bf16.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(f16[i], RefHalf(src[i])) << "n=" << n << " i=" << i;
      ASSERT_EQ(bf16[i], RefBf16(src[i])) << "n=" << n << " i=" << i;
    }
    for (int64_t i = n; i < n + 16; ++i) {
      ASSERT_EQ(f16[i], kGuard) << "n=" << n;
      ASSERT_EQ(bf16[i], kGuard) << "n=" << n;
    }
  }
}

TEST_P(KernelSetTest, Bf16ToF32DecodesEveryBf16) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> out(all.size());
  ks_->bf16_to_f32(all.data(), out.data(), static_cast<int64_t>(all.size()));
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_TRUE(SameFloat(out[h], RefBf16(static_cast<uint16_t>(h)))) << std::hex << h;
  }
}

TEST_P(KernelSetTest, Q8_0ToF32OnHandBuiltBlocks) {
  BlockQ8_0 blocks[3];
  blocks[0].d = 0x3800;  // 0.5
  for (int j = 0; j < 32; ++j) blocks[0].qs[j] = static_cast<int8_t>(j - 16);
  blocks[1].d = 0x4000;  // 2.0
  for (int j = 0; j < 32; ++j) blocks[1].qs[j] = static_cast<int8_t>(j % 2 ? 127 : -128 + j);
  blocks[2].d = 0xB400;  // -0.25
  for (int j = 0; j < 32; ++j) blocks[2].qs[j] = static_cast<int8_t>(3 * j - 50);
  std::vector<float> out(96 + 8, kNaN);
  ks_->q8_0_to_f32(blocks, out.data(), 96);
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(out[j], (j - 16) * 0.5f) << j;
    EXPECT_EQ(out[32 + j], (j % 2 ? 127 : -128 + j) * 2.0f) << j;
    EXPECT_EQ(out[64 + j], (3 * j - 50) * -0.25f) << j;
  }
  for (int i = 96; i < 104; ++i) EXPECT_TRUE(std::isnan(out[i])) << "wrote past the end";
}

TEST_P(KernelSetTest, Q4_0ToF32PutsLowNibblesFirst) {
  BlockQ4_0 blocks[2];
  blocks[0].d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) blocks[0].qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  blocks[1].d = 0xC000;  // -2.0
  for (int j = 0; j < 16; ++j) blocks[1].qs[j] = static_cast<uint8_t>(((j * 5) % 16) | (((j * 3 + 1) % 16) << 4));
  std::vector<float> out(64 + 8, kNaN);
  ks_->q4_0_to_f32(blocks, out.data(), 64);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(out[16 + j], (15 - j - 8) * 0.5f) << j;
    EXPECT_EQ(out[32 + j], ((j * 5) % 16 - 8) * -2.0f) << j;
    EXPECT_EQ(out[48 + j], ((j * 3 + 1) % 16 - 8) * -2.0f) << j;
  }
  for (int i = 64; i < 72; ++i) EXPECT_TRUE(std::isnan(out[i])) << "wrote past the end";
}

TEST_P(KernelSetTest, QuantizeQ8_0OnAHandComputedBlock) {
  // x_j = j - 16: amax 16, scale 16/127, q_j = round((j - 16) * 127 / 16).
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  BlockQ8_0 b[2];
  std::memset(b, 0x5A, sizeof(b));
  ks_->quantize_q8_0(x.data(), b, 32);
  EXPECT_NEAR(RefHalf(b[0].d), 16.0 / 127, 16.0 / 127 * std::ldexp(1.0, -11));
  for (int j = 0; j < 32; ++j) {
    const double exact = (j - 16) * 127.0 / 16;
    const double lower = std::floor(exact);
    const bool tie = exact - lower == 0.5;
    const long expect = std::lround(exact);  // ties: either neighbour is accepted
    if (tie) {
      EXPECT_TRUE(b[0].qs[j] == lower || b[0].qs[j] == lower + 1) << j << " gave " << int{b[0].qs[j]};
    } else {
      EXPECT_EQ(b[0].qs[j], expect) << j;
    }
  }
  EXPECT_EQ(b[0].qs[0], -127);
  // The next block is untouched.
  const uint8_t* next = reinterpret_cast<const uint8_t*>(&b[1]);
  for (size_t i = 0; i < sizeof(BlockQ8_0); ++i) EXPECT_EQ(next[i], 0x5A);
}

TEST_P(KernelSetTest, QuantizeQ8_0OnRandomBlocks) {
  for (int64_t blocks : {1, 2, 3, 7}) {
    const int64_t n = blocks * 32;
    std::vector<float> x = RandomFloats(rng_, n, -3.0f, 3.0f);
    if (blocks == 3) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
    std::vector<BlockQ8_0> q(blocks);
    ks_->quantize_q8_0(x.data(), q.data(), n);
    for (int64_t b = 0; b < blocks; ++b) {
      float amax = 0;
      int arg = 0;
      for (int j = 0; j < 32; ++j) {
        if (std::fabs(x[b * 32 + j]) > amax) {
          amax = std::fabs(x[b * 32 + j]);
          arg = j;
        }
      }
      if (amax == 0) {
        EXPECT_EQ(RefHalf(q[b].d), 0.0f);
        for (int j = 0; j < 32; ++j) EXPECT_EQ(q[b].qs[j], 0);
        continue;
      }
      const double d = amax / 127.0;
      EXPECT_NEAR(RefHalf(q[b].d), d, d * std::ldexp(1.0, -11)) << "block " << b;
      for (int j = 0; j < 32; ++j) {
        const double exact = x[b * 32 + j] / d;
        // Round to nearest; the slack covers float rounding of x * (1/d) at ties.
        ASSERT_LE(std::fabs(q[b].qs[j] - exact), 0.5 + 1e-4) << "block " << b << " j=" << j;
      }
      EXPECT_EQ(std::abs(q[b].qs[arg]), 127);
    }
  }
}

// Blocks with random int8 values and fp16 scales; weights use the full int8
// range including -128, activations [-127, 127] as quantize_q8_0 makes them.
std::vector<BlockQ8_0> RandomQ8Blocks(std::mt19937& rng, int64_t blocks, int lo) {
  std::uniform_int_distribution<int> q(lo, 127);
  std::vector<BlockQ8_0> out(blocks);
  for (BlockQ8_0& b : out) {
    b.d = RandomScale(rng);
    for (int8_t& v : b.qs) v = static_cast<int8_t>(q(rng));
  }
  return out;
}

std::vector<int64_t> BlockCounts() { return {1, 2, 3, 4, 5, 8, 37}; }

TEST_P(KernelSetTest, DotQ8_0Q8_0MatchesExactIntegerReference) {
  for (int64_t blocks : BlockCounts()) {
    std::vector<BlockQ8_0> w = RandomQ8Blocks(rng_, blocks, -128);
    std::vector<BlockQ8_0> x = RandomQ8Blocks(rng_, blocks, -127);
    if (blocks == 2) {
      // Extremes: every product at its largest magnitude, both signs.
      for (int j = 0; j < 32; ++j) {
        w[0].qs[j] = j % 2 ? -127 : 127;
        x[0].qs[j] = j % 3 ? -127 : 127;
        w[1].qs[j] = -128;
        x[1].qs[j] = j % 2 ? -127 : 127;
      }
    }
    double ref = 0, mag = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t s = 0;
      for (int j = 0; j < 32; ++j) s += int64_t{w[b].qs[j]} * x[b].qs[j];
      const double term = static_cast<double>(s) * RefHalf(w[b].d) * RefHalf(x[b].d);
      ref += term;
      mag += std::fabs(term);
    }
    const float got = ks_->dot_q8_0_q8_0(w.data(), x.data(), blocks * 32);
    EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-12) << "blocks=" << blocks;
  }
}

TEST_P(KernelSetTest, DotQ4_0Q8_0MatchesExactIntegerReference) {
  for (int64_t blocks : BlockCounts()) {
    std::vector<BlockQ4_0> w(blocks);
    std::uniform_int_distribution<int> byte(0, 255);
    for (BlockQ4_0& b : w) {
      b.d = RandomScale(rng_);
      for (uint8_t& v : b.qs) v = static_cast<uint8_t>(byte(rng_));
    }
    std::vector<BlockQ8_0> x = RandomQ8Blocks(rng_, blocks, -127);
    if (blocks == 2) {
      for (int j = 0; j < 16; ++j) {
        w[0].qs[j] = 0x00;  // every weight -8
        w[1].qs[j] = 0xFF;  // every weight 7
      }
      for (int j = 0; j < 32; ++j) x[0].qs[j] = x[1].qs[j] = j % 2 ? -127 : 127;
    }
    double ref = 0, mag = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t s = 0;
      for (int j = 0; j < 16; ++j) {
        s += int64_t{(w[b].qs[j] & 0x0F) - 8} * x[b].qs[j];
        s += int64_t{(w[b].qs[j] >> 4) - 8} * x[b].qs[j + 16];
      }
      const double term = static_cast<double>(s) * RefHalf(w[b].d) * RefHalf(x[b].d);
      ref += term;
      mag += std::fabs(term);
    }
    const float got = ks_->dot_q4_0_q8_0(w.data(), x.data(), blocks * 32);
    EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-12) << "blocks=" << blocks;
  }
}

TEST_P(KernelSetTest, HalfPrecisionDotsMatchDoubleReference) {
  for (int64_t n : {1, 7, 15, 16, 17, 31, 32, 33, 100, 1024, 1031}) {
    const std::vector<float> w = RandomFloats(rng_, n, -2.0f, 2.0f);
    const std::vector<float> x = RandomFloats(rng_, n, -2.0f, 2.0f);
    std::vector<uint16_t> h(n), b(n);
    QuantizeRow(TensorType::kF16, w.data(), h.data(), n);
    QuantizeRow(TensorType::kBF16, w.data(), b.data(), n);
    double ref_h = 0, ref_b = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref_h += static_cast<double>(RefHalf(h[i])) * x[i];
      uint32_t bits = static_cast<uint32_t>(b[i]) << 16;
      float bf;
      std::memcpy(&bf, &bits, 4);
      ref_b += static_cast<double>(bf) * x[i];
      mag += std::fabs(static_cast<double>(w[i]) * x[i]);
    }
    EXPECT_NEAR(ks_->dot_f16_f32(h.data(), x.data(), n), ref_h, 1e-5 * mag + 1e-6) << "n=" << n;
    EXPECT_NEAR(ks_->dot_bf16_f32(b.data(), x.data(), n), ref_b, 1e-5 * mag + 1e-6) << "n=" << n;
  }
}

TEST_P(KernelSetTest, FourRowDotsEqualFourSingleDots) {
  for (int64_t blocks : {1, 3, 32}) {
    std::vector<BlockQ8_0> w8 = RandomQ8Blocks(rng_, blocks, -127);
    std::vector<BlockQ4_0> w4(blocks);
    std::uniform_int_distribution<int> byte(0, 255);
    for (BlockQ4_0& b : w4) {
      b.d = RandomScale(rng_);
      for (uint8_t& v : b.qs) v = static_cast<uint8_t>(byte(rng_));
    }
    std::vector<BlockQ8_0> x;
    for (int r = 0; r < 4; ++r) {
      const auto row = RandomQ8Blocks(rng_, blocks, -127);
      x.insert(x.end(), row.begin(), row.end());
    }
    const uint64_t stride = blocks * sizeof(BlockQ8_0);
    float out8[4], out4[4];
    ks_->dot4_q8_0_q8_0(w8.data(), x.data(), stride, blocks * 32, out8);
    ks_->dot4_q4_0_q8_0(w4.data(), x.data(), stride, blocks * 32, out4);
    for (int r = 0; r < 4; ++r) {
      const float want8 = ks_->dot_q8_0_q8_0(w8.data(), x.data() + r * blocks, blocks * 32);
      const float want4 = ks_->dot_q4_0_q8_0(w4.data(), x.data() + r * blocks, blocks * 32);
      EXPECT_NEAR(out8[r], want8, 1e-5f * (std::fabs(want8) + 1)) << "row " << r << " blocks " << blocks;
      EXPECT_NEAR(out4[r], want4, 1e-5f * (std::fabs(want4) + 1)) << "row " << r << " blocks " << blocks;
    }
  }
}

// ---------------------------------------------------------------------------
// QuantizeRow / DequantizeRow.

TEST_P(KernelSetTest, QuantizeRoundTripF32IsExact) {
  const std::vector<float> x = RandomFloats(rng_, 96, -100.0f, 100.0f);
  std::vector<float> q(96), y(96);
  QuantizeRow(TensorType::kF32, x.data(), q.data(), 96);
  DequantizeRow(TensorType::kF32, q.data(), y.data(), 96, *ks_);
  EXPECT_EQ(x, y);
}

TEST_P(KernelSetTest, QuantizeRoundTripF16AndBf16WithinTheirPrecision) {
  std::vector<float> x = RandomFloats(rng_, 256, -4.0f, 4.0f);
  x[0] = 0.0f;
  x[1] = 65504.0f;
  x[2] = std::ldexp(1.0f, -20);  // an F16 subnormal
  for (TensorType type : {TensorType::kF16, TensorType::kBF16}) {
    const double rel = type == TensorType::kF16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    const double abs = type == TensorType::kF16 ? std::ldexp(1.0, -25) : 0.0;  // half a subnormal ulp
    std::vector<uint16_t> q(x.size());
    std::vector<float> y(x.size());
    QuantizeRow(type, x.data(), q.data(), static_cast<int64_t>(x.size()));
    DequantizeRow(type, q.data(), y.data(), static_cast<int64_t>(x.size()), *ks_);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_LE(std::fabs(static_cast<double>(y[i]) - x[i]), rel * std::fabs(x[i]) + abs)
          << gguf::TypeName(type) << " i=" << i << " x=" << x[i];
    }
  }
}

TEST_P(KernelSetTest, QuantizeRoundTripQ8_0WithinHalfAScale) {
  constexpr int64_t n = 32 * 6;
  const std::vector<float> x = RandomFloats(rng_, n, -5.0f, 5.0f);
  std::vector<BlockQ8_0> q(n / 32);
  std::vector<float> y(n);
  QuantizeRow(TensorType::kQ8_0, x.data(), q.data(), n);
  DequantizeRow(TensorType::kQ8_0, q.data(), y.data(), n, *ks_);
  for (int64_t b = 0; b < n / 32; ++b) {
    double amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(static_cast<double>(x[b * 32 + j])));
    const double d = amax / 127, d16 = RefHalf(q[b].d);
    // Half a step, plus the scale's own rounding to fp16 times the largest |q|.
    const double tol = d / 2 + 127 * std::fabs(d16 - d) + 1e-6;
    for (int j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(static_cast<double>(y[b * 32 + j]) - x[b * 32 + j]), tol) << "b=" << b << " j=" << j;
    }
  }
}

TEST_P(KernelSetTest, QuantizeRoundTripQ4_0WithinHalfAScale) {
  constexpr int64_t n = 32 * 6;
  // Q4_0 maps the signed extreme to -8 steps; a value of the opposite sign
  // beyond 7.5 steps would be clamped to +7 (see the next test). With the
  // extreme at 5.5 and everything else within 5 (7.27 steps), none is.
  std::vector<float> x = RandomFloats(rng_, n, -5.0f, 5.0f);
  for (int64_t b = 0; b < n / 32; ++b) x[b * 32 + b % 32] = b % 2 ? -5.5f : 5.5f;
  std::vector<BlockQ4_0> q(n / 32);
  std::vector<float> y(n);
  QuantizeRow(TensorType::kQ4_0, x.data(), q.data(), n);
  DequantizeRow(TensorType::kQ4_0, q.data(), y.data(), n, *ks_);
  for (int64_t b = 0; b < n / 32; ++b) {
    const double d = 5.5 / 8, d16 = std::fabs(RefHalf(q[b].d));
    const double tol = d / 2 + 8 * std::fabs(d16 - d) + 1e-6;
    for (int j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(static_cast<double>(y[b * 32 + j]) - x[b * 32 + j]), tol) << "b=" << b << " j=" << j;
    }
    // The extreme itself is exact up to the scale's rounding.
    EXPECT_NEAR(y[b * 32 + b % 32], x[b * 32 + b % 32], 8 * std::fabs(d16 - d) + 1e-6);
  }
}

TEST_P(KernelSetTest, QuantizeQ4_0ClampsTheOppositeExtremeToSeven) {
  // max = -8 (scale 1): +8 would need q = 16, so it is clamped to 15 (value +7).
  std::vector<float> x(32, 0.0f);
  x[3] = -8.0f;
  x[20] = 8.0f;
  x[5] = 7.0f;
  BlockQ4_0 q;
  QuantizeRow(TensorType::kQ4_0, x.data(), &q, 32);
  std::vector<float> y(32);
  DequantizeRow(TensorType::kQ4_0, &q, y.data(), 32, *ks_);
  EXPECT_EQ(RefHalf(q.d), 1.0f);
  EXPECT_EQ(y[3], -8.0f);
  EXPECT_EQ(y[5], 7.0f);
  EXPECT_EQ(y[20], 7.0f);
  EXPECT_EQ(y[0], 0.0f);
}

// ---------------------------------------------------------------------------
// Q4_1, Q5_0, Q5_1: the other 32-element types of GGUF files.

TEST(LegacyQuantTest, BlocksDecodeAsTheLayoutDefines) {
  // Q5_0, d = 1: qs[j] = j | (15 - j) << 4 and qh with bits 0, 17 and 31 set.
  BlockQ5_0 q5{};
  q5.d = 0x3C00;
  for (int j = 0; j < 16; ++j) q5.qs[j] = static_cast<uint8_t>(j | (15 - j) << 4);
  const uint32_t qh = 1u | 1u << 17 | 1u << 31;
  std::memcpy(q5.qh, &qh, 4);
  std::vector<float> y(32);
  DequantizeRow(TensorType::kQ5_0, &q5, y.data(), 32);
  EXPECT_EQ(y[0], 0.0f);     // 0 + 16 - 16
  EXPECT_EQ(y[1], -15.0f);   // 1 - 16
  EXPECT_EQ(y[16], -1.0f);   // 15 - 16
  EXPECT_EQ(y[17], 14.0f);   // 14 + 16 - 16
  EXPECT_EQ(y[31], 0.0f);    // 0 + 16 - 16
  EXPECT_EQ(y[30], -15.0f);  // 1 - 16
  // Q4_1, d = 0.5, m = -1: q = 3 gives 0.5, q = 15 gives 6.5.
  BlockQ4_1 q4{};
  q4.d = 0x3800;
  q4.m = 0xBC00;
  q4.qs[3] = 0xF3;
  DequantizeRow(TensorType::kQ4_1, &q4, y.data(), 32);
  EXPECT_EQ(y[3], 0.5f);
  EXPECT_EQ(y[19], 6.5f);
  EXPECT_EQ(y[0], -1.0f);
  // Q5_1, d = 2, m = 1: element 20 with its fifth bit and nibble 1 is 2 * 17 + 1.
  BlockQ5_1 q51{};
  q51.d = 0x4000;
  q51.m = 0x3C00;
  q51.qs[4] = 0x10;
  q51.qh[2] = 0x10;  // bit 20
  DequantizeRow(TensorType::kQ5_1, &q51, y.data(), 32);
  EXPECT_EQ(y[20], 35.0f);
  EXPECT_EQ(y[4], 1.0f);
}

// Random blocks (every bit pattern; offsets of both signs) of a 32-element
// type with its fp16 scale first (and Q4_1 / Q5_1's offset second).
std::vector<uint8_t> RandomLegacyRow(std::mt19937& rng, TensorType type, int64_t blocks) {
  const gguf::TypeTraits* t = gguf::FindTypeTraits(static_cast<uint32_t>(type));
  std::vector<uint8_t> row(blocks * t->block_bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& v : row) v = static_cast<uint8_t>(byte(rng));
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* blk = row.data() + b * t->block_bytes;
    const uint16_t d = RandomScale(rng);
    std::memcpy(blk, &d, 2);
    if (type == TensorType::kQ4_1 || type == TensorType::kQ5_1) {
      const uint16_t m = static_cast<uint16_t>(RandomScale(rng) | (byte(rng) % 2 ? 0x8000 : 0));
      std::memcpy(blk + 2, &m, 2);
    }
  }
  return row;
}

TEST_P(KernelSetTest, OtherThirtyTwoElementTypeDotsMatchTheDequantizedWeights) {
  const TensorType types[] = {TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL};
  for (TensorType type : types) {
    for (int64_t blocks : BlockCounts()) {
      const std::vector<uint8_t> w = RandomLegacyRow(rng_, type, blocks);
      const std::vector<float> wd = RefDequantize(type, w.data(), blocks * 32);
      std::vector<BlockQ8_0> x;
      for (int r = 0; r < 4; ++r) {
        const auto row = RandomQ8Blocks(rng_, blocks, -127);
        x.insert(x.end(), row.begin(), row.end());
      }
      float four[4];
      const auto dot4 = type == TensorType::kQ4_1   ? ks_->dot4_q4_1_q8_0
                        : type == TensorType::kQ5_0 ? ks_->dot4_q5_0_q8_0
                        : type == TensorType::kQ5_1 ? ks_->dot4_q5_1_q8_0
                                                    : ks_->dot4_iq4_nl_q8_0;
      const auto dot = type == TensorType::kQ4_1   ? ks_->dot_q4_1_q8_0
                       : type == TensorType::kQ5_0 ? ks_->dot_q5_0_q8_0
                       : type == TensorType::kQ5_1 ? ks_->dot_q5_1_q8_0
                                                   : ks_->dot_iq4_nl_q8_0;
      dot4(w.data(), x.data(), blocks * sizeof(BlockQ8_0), blocks * 32, four);
      for (int r = 0; r < 4; ++r) {
        double ref = 0, mag = 0;
        for (int64_t b = 0; b < blocks; ++b) {
          const BlockQ8_0& xb = x[r * blocks + b];
          for (int j = 0; j < 32; ++j) {
            const double t = static_cast<double>(wd[b * 32 + j]) * xb.qs[j] * RefHalf(xb.d);
            ref += t;
            mag += std::fabs(t);
          }
        }
        const std::string where = std::string(gguf::TypeName(type)) + " blocks=" + std::to_string(blocks) +
                                  " r=" + std::to_string(r);
        EXPECT_NEAR(dot(w.data(), x.data() + r * blocks, blocks * 32), ref, 1e-5 * mag + 1e-12) << where;
        EXPECT_NEAR(four[r], ref, 1e-5 * mag + 1e-12) << where;
      }
    }
  }
}

TEST_P(KernelSetTest, QuantizeRoundTripOffsetTypesWithinHalfAStep) {
  constexpr int64_t n = 32 * 6;
  std::vector<float> x = RandomFloats(rng_, n, -5.0f, 3.0f);
  for (int j = 0; j < 32; ++j) x[j] = 0.25f;  // a constant block: d = 0
  for (TensorType type : {TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1}) {
    std::vector<uint8_t> q(RowBytes(type, n));
    std::vector<float> y(n);
    QuantizeRow(type, x.data(), q.data(), n);
    DequantizeRow(type, q.data(), y.data(), n, *ks_);
    EXPECT_EQ(y, RefDequantize(type, q.data(), n)) << gguf::TypeName(type);
    for (int64_t b = 0; b < n / 32; ++b) {
      const float* xb = x.data() + b * 32;
      const double lo = *std::min_element(xb, xb + 32), hi = *std::max_element(xb, xb + 32);
      double tol;
      if (type == TensorType::kQ5_0) {
        // The signed extreme is -16 steps; everything else lies within 16 steps
        // of zero, so only rounding remains: half a step, plus the scale's
        // rounding to fp16 times the largest |q|.
        const double amax = std::max(-lo, hi), d = amax / 16;
        tol = d / 2 + 16 * std::fabs(std::fabs(RefHalf(q[b * 22] | q[b * 22 + 1] << 8)) - d);
      } else {
        const int top = type == TensorType::kQ4_1 ? 15 : 31;
        const int bytes = type == TensorType::kQ4_1 ? 20 : 24;
        const double d = (hi - lo) / top;
        const double d16 = RefHalf(q[b * bytes] | q[b * bytes + 1] << 8), m16 = RefHalf(q[b * bytes + 2] | q[b * bytes + 3] << 8);
        tol = d / 2 + top * std::fabs(d16 - d) + std::fabs(m16 - lo);
      }
      for (int j = 0; j < 32; ++j) {
        ASSERT_LE(std::fabs(static_cast<double>(y[b * 32 + j]) - xb[j]), tol + 1e-6)
            << gguf::TypeName(type) << " b=" << b << " j=" << j;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// K-quant super-blocks, built by hand from the GGUF layouts.

// Packs eight 6-bit scales and mins into the 12-byte K4 form: bytes 0..3 hold
// scale j (low 6 bits) and bits 4..5 of scale j+4 on top; bytes 4..7 the same
// for the mins; bytes 8..11 the low 4 bits of scale j+4 and min j+4.
void PackScalesK4(const int sc[8], const int mn[8], uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
}

// Quants with no period: a bit placed in the wrong sub-block must show.
void RandomQuants(int levels, int q[256]) {
  std::mt19937 rng(levels);
  std::uniform_int_distribution<int> dist(0, levels - 1);
  for (int e = 0; e < 256; ++e) q[e] = dist(rng);
}

const int kScK4[8] = {1, 63, 17, 40, 33, 50, 7, 62};
const int kMinK4[8] = {0, 5, 63, 20, 48, 1, 36, 15};

TEST(KQuantTest, Q4_KDequantizesFromTheLayout) {
  BlockQ4_K b;
  b.d = 0x3400;     // 0.25
  b.dmin = 0x3000;  // 0.125
  PackScalesK4(kScK4, kMinK4, b.scales);
  // Element e lies in chunk c = e / 64; its 4 bits are the low nibble of
  // qs[32c + e % 32] in the chunk's first 32, the high nibble in the second.
  int q[256];
  RandomQuants(16, q);
  q[0] = 3;
  q[200] = 9;
  std::memset(b.qs, 0, sizeof(b.qs));
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, l = e % 32;
    b.qs[32 * c + l] |= static_cast<uint8_t>(e % 64 < 32 ? q[e] : q[e] << 4);
  }
  std::vector<float> y(256);
  DequantizeRow(TensorType::kQ4_K, &b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;  // sub-block of 32
    const float expect = 0.25f * kScK4[s] * q[e] - 0.125f * kMinK4[s];
    ASSERT_EQ(y[e], expect) << e;
  }
  // Two spot checks written out: element 0 (sub-block 0), element 200 (sub-block 6).
  EXPECT_EQ(y[0], 0.25f * 1 * 3 - 0.125f * 0);
  EXPECT_EQ(y[200], 0.25f * 7 * 9 - 0.125f * 36);
}

TEST(KQuantTest, Q5_KDequantizesFromTheLayout) {
  BlockQ5_K b;
  b.d = 0x3800;     // 0.5
  b.dmin = 0x3400;  // 0.25
  PackScalesK4(kScK4, kMinK4, b.scales);
  // Low 4 bits as in Q4_K; the fifth bit of element e is bit (2c + second half)
  // of qh[e % 32], c = e / 64.
  int q[256];
  RandomQuants(32, q);
  q[1] = 16;
  std::memset(b.qs, 0, sizeof(b.qs));
  std::memset(b.qh, 0, sizeof(b.qh));
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, l = e % 32, upper = e % 64 >= 32;
    b.qs[32 * c + l] |= static_cast<uint8_t>(upper ? (q[e] & 0xF) << 4 : q[e] & 0xF);
    if (q[e] & 16) b.qh[l] |= static_cast<uint8_t>(1u << (2 * c + upper));
  }
  std::vector<float> y(256);
  DequantizeRow(TensorType::kQ5_K, &b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;
    const float expect = 0.5f * kScK4[s] * q[e] - 0.25f * kMinK4[s];
    ASSERT_EQ(y[e], expect) << e;
  }
  EXPECT_EQ(y[1], 0.5f * 1 * 16 - 0.25f * 0);  // q = 16: only the high bit set
}

TEST(KQuantTest, Q6_KDequantizesFromTheLayout) {
  BlockQ6_K b;
  b.d = 0x3800;  // 0.5
  const int8_t scales[16] = {1, -2, 3, -4, 5, 127, -128, 8, 9, -10, 11, 12, -13, 14, 15, -16};
  std::memcpy(b.scales, scales, 16);
  // Element e: half h = e / 128, quarter g = (e % 128) / 32, l = e % 32.
  // Low 4 bits: ql[64h + l + 32 (g odd)], low nibble for g < 2, high for g >= 2.
  // High 2 bits: bits 2g..2g+1 of qh[32h + l]. Scale: scales[8h + l / 16 + 2g].
  int q[256];
  RandomQuants(64, q);
  std::memset(b.ql, 0, sizeof(b.ql));
  std::memset(b.qh, 0, sizeof(b.qh));
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, g = (e % 128) / 32, l = e % 32;
    const int qli = 64 * h + l + (g % 2 ? 32 : 0);
    b.ql[qli] |= static_cast<uint8_t>(g < 2 ? q[e] & 0xF : (q[e] & 0xF) << 4);
    b.qh[32 * h + l] |= static_cast<uint8_t>((q[e] >> 4) << (2 * g));
  }
  std::vector<float> y(256);
  DequantizeRow(TensorType::kQ6_K, &b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, g = (e % 128) / 32, l = e % 32;
    const float expect = 0.5f * scales[8 * h + l / 16 + 2 * g] * (q[e] - 32);
    ASSERT_EQ(y[e], expect) << e;
  }
  // The brief's formula for l < 32 in the first half, read straight off the bytes.
  for (int l = 0; l < 32; ++l) {
    const int ql = (b.ql[l] & 0xF) | ((b.qh[l] & 3) << 4);
    EXPECT_EQ(y[l], 0.5f * scales[l / 16] * (ql - 32)) << l;
  }
}

// ---------------------------------------------------------------------------
// Q8_K activations and the K-quant dot products.

// Q8_K by its definition (kernel_set.h): per 256, max is the first value of
// largest magnitude, iscale = -127 / max, q = min(127, nearest-even(iscale *
// x)) in float, d = 1 / iscale, bsums the sums of each 16 codes.
std::vector<BlockQ8_K> RefQuantizeQ8_K(const float* x, int64_t n) {
  std::vector<BlockQ8_K> out(n / 256);
  for (int64_t b = 0; b < n / 256; ++b) {
    const float* xb = x + b * 256;
    float max = 0;
    for (int j = 0; j < 256; ++j) {
      if (std::fabs(xb[j]) > std::fabs(max)) max = xb[j];
    }
    BlockQ8_K& q = out[b];
    if (max == 0) {
      q.d = 0;
      std::memset(q.qs, 0, sizeof(q.qs));
    } else {
      const float iscale = -127.0f / max;
      q.d = 1 / iscale;
      for (int j = 0; j < 256; ++j) {
        q.qs[j] = static_cast<int8_t>(std::min(127.0f, std::nearbyint(iscale * xb[j])));
      }
    }
    for (int k = 0; k < 16; ++k) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += q.qs[16 * k + j];
      q.bsums[k] = static_cast<int16_t>(sum);
    }
  }
  return out;
}

void ExpectSameQ8_K(const BlockQ8_K& got, const BlockQ8_K& want, const std::string& where) {
  EXPECT_EQ(Bits(got.d), Bits(want.d)) << where << ": d " << got.d << " vs " << want.d;
  for (int j = 0; j < 256; ++j) ASSERT_EQ(got.qs[j], want.qs[j]) << where << " j=" << j;
  for (int k = 0; k < 16; ++k) ASSERT_EQ(got.bsums[k], want.bsums[k]) << where << " k=" << k;
}

TEST_P(KernelSetTest, QuantizeQ8_KOnAHandComputedBlock) {
  // x_j = j % 37 - 18 in [-18, 18], with -40 at j = 5 and +40 at j = 200: the
  // first largest magnitude is negative, so iscale = 127 / 40 > 0 and
  // q_j = round(x_j * 127 / 40): -127 at j = 5, +127 at j = 200.
  std::vector<float> x(256);
  for (int j = 0; j < 256; ++j) x[j] = static_cast<float>(j % 37 - 18);
  x[5] = -40.0f;
  x[200] = 40.0f;
  BlockQ8_K b[2];
  std::memset(b, 0x5A, sizeof(b));
  ks_->quantize_q8_K(x.data(), b, 256);
  EXPECT_NEAR(b[0].d, 40.0 / 127, 40.0 / 127 * 1e-6);
  for (int j = 0; j < 256; ++j) {
    const double exact = x[j] * 127.0 / 40;
    ASSERT_LE(std::fabs(b[0].qs[j] - exact), 0.5 + 1e-4) << j;  // ties: either neighbour
  }
  EXPECT_EQ(b[0].qs[5], -127);
  EXPECT_EQ(b[0].qs[200], 127);
  EXPECT_EQ(b[0].qs[18], 0);  // x = 0
  for (int k = 0; k < 16; ++k) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += b[0].qs[16 * k + j];
    EXPECT_EQ(b[0].bsums[k], sum) << k;
  }
  const uint8_t* next = reinterpret_cast<const uint8_t*>(&b[1]);
  for (size_t i = 0; i < sizeof(BlockQ8_K); ++i) ASSERT_EQ(next[i], 0x5A) << "wrote past the block";
}

TEST_P(KernelSetTest, QuantizeQ8_KFollowsTheDefinitionExactly) {
  // Random rows of 1, 3 and 5 blocks; an all-zero block; a block whose
  // largest magnitude appears with both signs (the first decides the sign of
  // d); a block whose largest magnitude is its last value.
  for (int64_t blocks : {1, 3, 5}) {
    const int64_t n = blocks * 256;
    std::vector<float> x = RandomFloats(rng_, n, -3.0f, 3.0f);
    if (blocks >= 3) {
      std::fill(x.begin() + 256, x.begin() + 512, 0.0f);
      x[512 + 7] = 4.0f;
      x[512 + 9] = -4.0f;
    }
    if (blocks == 5) x[1024 + 255] = -5.0f;  // the largest magnitude last
    std::vector<BlockQ8_K> got(blocks);
    ks_->quantize_q8_K(x.data(), got.data(), n);
    const std::vector<BlockQ8_K> want = RefQuantizeQ8_K(x.data(), n);
    for (int64_t b = 0; b < blocks; ++b) {
      ExpectSameQ8_K(got[b], want[b], "blocks=" + std::to_string(blocks) + " b=" + std::to_string(b));
    }
    if (blocks >= 3) {
      EXPECT_EQ(got[1].d, 0.0f);
      EXPECT_LT(got[2].d, 0.0f) << "first largest is +4, so d = -4 / 127";
      EXPECT_EQ(got[2].qs[7], -127);
      EXPECT_EQ(got[2].qs[9], 127);
    }
  }
}

// A normal fp16 of either sign between 2^-10 and 2^2.
uint16_t RandomNormalHalf(std::mt19937& rng) {
  const int exponent = std::uniform_int_distribution<int>(5, 17)(rng);
  const int mantissa = std::uniform_int_distribution<int>(0, 1023)(rng);
  const int sign = std::uniform_int_distribution<int>(0, 1)(rng);
  return static_cast<uint16_t>((sign << 15) | (exponent << 10) | mantissa);
}

// `rows` rows of `blocks` K-quant super-blocks: random bytes, with the fp16
// scales made normal numbers.
std::vector<uint8_t> RandomKQuantRows(std::mt19937& rng, TensorType type, int64_t rows, int64_t blocks) {
  const uint64_t block_bytes = RowBytes(type, 256);
  std::vector<uint8_t> bytes(block_bytes * blocks * rows);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& v : bytes) v = static_cast<uint8_t>(byte(rng));
  for (uint64_t i = 0; i < bytes.size() / block_bytes; ++i) {
    uint8_t* blk = bytes.data() + i * block_bytes;
    if (type == TensorType::kQ6_K) {
      reinterpret_cast<BlockQ6_K*>(blk)->d = RandomNormalHalf(rng);
    } else if (type == TensorType::kQ3_K) {
      reinterpret_cast<BlockQ3_K*>(blk)->d = RandomNormalHalf(rng);
    } else if (type == TensorType::kQ2_K) {
      reinterpret_cast<BlockQ2_K*>(blk)->d = RandomNormalHalf(rng);
      reinterpret_cast<BlockQ2_K*>(blk)->dmin = RandomNormalHalf(rng);
    } else if (type == TensorType::kIQ4_XS) {
      reinterpret_cast<BlockIQ4_XS*>(blk)->d = RandomNormalHalf(rng);
    } else {
      // d and dmin lead both Q4_K and Q5_K blocks.
      const uint16_t d = RandomNormalHalf(rng), dmin = RandomNormalHalf(rng);
      std::memcpy(blk, &d, 2);
      std::memcpy(blk + 2, &dmin, 2);
    }
  }
  return bytes;
}

// Q8_K activation blocks with random codes in [-127, 127] (the quantizer's
// range), a random float scale and matching bsums.
std::vector<BlockQ8_K> RandomQ8_KBlocks(std::mt19937& rng, int64_t blocks) {
  std::uniform_int_distribution<int> code(-127, 127);
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  std::vector<BlockQ8_K> out(blocks);
  for (BlockQ8_K& b : out) {
    b.d = scale(rng);
    for (int8_t& q : b.qs) q = static_cast<int8_t>(code(rng));
    for (int k = 0; k < 16; ++k) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += b.qs[16 * k + j];
      b.bsums[k] = static_cast<int16_t>(sum);
    }
  }
  return out;
}

struct KQuantDot {
  TensorType type;
  float (*KernelSet::*dot)(const void*, const void*, int64_t);
  void (*KernelSet::*dot4)(const void*, const void*, uint64_t, int64_t, float*);
};
constexpr KQuantDot kKQuantDots[] = {
    {TensorType::kQ2_K, &KernelSet::dot_q2_K_q8_K, &KernelSet::dot4_q2_K_q8_K},
    {TensorType::kQ3_K, &KernelSet::dot_q3_K_q8_K, &KernelSet::dot4_q3_K_q8_K},
    {TensorType::kIQ4_XS, &KernelSet::dot_iq4_xs_q8_K, &KernelSet::dot4_iq4_xs_q8_K},
    {TensorType::kQ4_K, &KernelSet::dot_q4_K_q8_K, &KernelSet::dot4_q4_K_q8_K},
    {TensorType::kQ5_K, &KernelSet::dot_q5_K_q8_K, &KernelSet::dot4_q5_K_q8_K},
    {TensorType::kQ6_K, &KernelSet::dot_q6_K_q8_K, &KernelSet::dot4_q6_K_q8_K},
};

// sum_i w_i * d * q_i in double, with w from DequantizeRow (the tested
// definition of the weights), and sum_i |w_i * d * q_i| as the scale of the
// float rounding.
void DequantizedDot(TensorType type, const uint8_t* w, const BlockQ8_K* x, int64_t n, double* dot, double* mag) {
  std::vector<float> wd(n);
  DequantizeRow(type, w, wd.data(), n, ScalarKernels());
  *dot = *mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(wd[i]) * x[i / 256].d * x[i / 256].qs[i % 256];
    *dot += t;
    *mag += std::fabs(t);
  }
}

TEST(LowBitKQuantTest, Q3_KScalesAndThirdBitsFollowTheLayout) {
  BlockQ3_K b{};
  b.d = 0x3C00;  // 1
  // Sub-block 13: low nibble in the high half of scales[5], top bits at bits
  // 6-7 of scales[9]: 0b10'0111 = 39, so its scale is 7.
  b.scales[5] = 0x70;
  b.scales[9] = 0x80;
  // Element 200 = 128 + 32 * 2 + 8 (h 1, j 2, g 0, l 8): sub-block 8 + 4 = 12;
  // element 216 (g 1): sub-block 13. Its quant 2 at bits 4-5 of qs[32 + 16 + 8],
  // its third bit (set) at bit 6 of hmask[16 + 8].
  b.qs[56] = 2 << 4;
  b.hmask[24] = 1 << 6;
  std::vector<float> y(256);
  DequantizeRow(TensorType::kQ3_K, &b, y.data(), 256);
  EXPECT_EQ(y[216], 7.0f * 2);
  // The other elements of sub-block 13 have quant 0 and no third bit: -4.
  EXPECT_EQ(y[217], 7.0f * -4);
  // Sub-block 0's scale is -32 (all bits clear); element 0: quant -4.
  EXPECT_EQ(y[0], -32.0f * -4);
}

TEST(LowBitKQuantTest, Q2_KScalesAndMinsFollowTheLayout) {
  BlockQ2_K b{};
  b.d = 0x3C00;     // 1
  b.dmin = 0x3800;  // 0.5
  b.scales[13] = 0x35;  // scale 5, min 3
  b.qs[56] = 3 << 4;    // element 216: quant 3 (as in the Q3_K test)
  std::vector<float> y(256);
  DequantizeRow(TensorType::kQ2_K, &b, y.data(), 256);
  EXPECT_EQ(y[216], 5.0f * 3 - 0.5f * 3);
  EXPECT_EQ(y[217], -0.5f * 3);
  EXPECT_EQ(y[0], 0.0f);
}

TEST(LowBitKQuantTest, IQ4_XSScalesFollowTheLayout) {
  BlockIQ4_XS b{};
  b.d = 0x3800;  // 0.5
  // Sub-block 5: low bits in the high nibble of scales_l[2], top bits at bits
  // 10-11 of scales_h: 0b11'0100 = 52, scale 20.
  b.scales_l[2] = 0x40;
  b.scales_h = 3 << 10;
  b.qs[16 * 5 + 3] = 0xF8;  // element 163: value index 8 (1); element 179: 15 (113)
  std::vector<float> y(256);
  DequantizeRow(TensorType::kIQ4_XS, &b, y.data(), 256);
  EXPECT_EQ(y[163], 0.5f * 20 * 1);
  EXPECT_EQ(y[179], 0.5f * 20 * 113);
  EXPECT_EQ(y[160], 0.5f * 20 * -127);  // index 0
  EXPECT_EQ(y[0], 0.5f * -32 * -127);   // sub-block 0: scale -32
}

TEST(LowBitKQuantTest, RandomBlocksDecodeAsTheReference) {
  std::mt19937 rng(7);
  for (TensorType type : {TensorType::kQ2_K, TensorType::kQ3_K, TensorType::kIQ4_XS}) {
    const std::vector<uint8_t> w = RandomKQuantRows(rng, type, 1, 5);
    std::vector<float> y(5 * 256);
    DequantizeRow(type, w.data(), y.data(), 5 * 256);
    EXPECT_EQ(y, RefDequantize(type, w.data(), 5 * 256)) << gguf::TypeName(type);
  }
  const std::vector<uint8_t> w = RandomLegacyRow(rng, TensorType::kIQ4_NL, 7);
  std::vector<float> y(7 * 32);
  DequantizeRow(TensorType::kIQ4_NL, w.data(), y.data(), 7 * 32);
  EXPECT_EQ(y, RefDequantize(TensorType::kIQ4_NL, w.data(), 7 * 32));
}

TEST_P(KernelSetTest, KQuantDotsMatchTheScalarReferenceAndTheDequantizedWeights) {
  constexpr int kRows = 3;
  for (const KQuantDot& k : kKQuantDots) {
    for (int64_t blocks : {1, 2, 3, 5, 7}) {
      std::vector<uint8_t> w = RandomKQuantRows(rng_, k.type, kRows, blocks);
      std::vector<BlockQ8_K> x = RandomQ8_KBlocks(rng_, blocks);
      if (blocks == 2) {
        // Extremes in block 0: every quant, scale and min at its largest
        // magnitude, against activations all 127 (the int16 pair sums at their limit).
        if (k.type == TensorType::kQ6_K) {  // d sits at the end
          auto* b = reinterpret_cast<BlockQ6_K*>(w.data());
          std::memset(b->ql, 0xFF, sizeof(b->ql));
          std::memset(b->qh, 0xFF, sizeof(b->qh));
          std::fill(std::begin(b->scales), std::end(b->scales), int8_t{-128});
        } else if (k.type == TensorType::kQ2_K) {  // d and dmin at the end
          std::memset(w.data(), 0xFF, RowBytes(k.type, 256) - 4);
        } else if (k.type == TensorType::kQ3_K) {  // quants 3 (all bits set), scales -32 (all clear)
          auto* b = reinterpret_cast<BlockQ3_K*>(w.data());
          std::memset(b->hmask, 0xFF, sizeof(b->hmask));
          std::memset(b->qs, 0xFF, sizeof(b->qs));
          std::memset(b->scales, 0x00, sizeof(b->scales));
        } else if (k.type == TensorType::kIQ4_XS) {  // d leads: scales 31, values 113
          std::memset(w.data() + 2, 0xFF, RowBytes(k.type, 256) - 2);
        } else {  // d and dmin lead
          std::memset(w.data() + 4, 0xFF, RowBytes(k.type, 256) - 4);
        }
        std::fill(std::begin(x[0].qs), std::end(x[0].qs), int8_t{127});
        std::fill(std::begin(x[0].bsums), std::end(x[0].bsums), int16_t{16 * 127});
      }
      const uint64_t row_bytes = RowBytes(k.type, blocks * 256);
      for (int row = 0; row < kRows; ++row) {
        const uint8_t* wr = w.data() + row * row_bytes;
        double ref, mag;
        DequantizedDot(k.type, wr, x.data(), blocks * 256, &ref, &mag);
        const float got = (ks_->*k.dot)(wr, x.data(), blocks * 256);
        const float scalar = (ScalarKernels().*k.dot)(wr, x.data(), blocks * 256);
        const std::string where = std::string(gguf::TypeName(k.type)) + " blocks=" + std::to_string(blocks) +
                                  " row=" + std::to_string(row);
        EXPECT_NEAR(got, ref, 1e-5 * mag) << where;
        EXPECT_NEAR(got, scalar, 1e-5 * mag) << where;
      }
    }
  }
}

TEST_P(KernelSetTest, FourRowKQuantDotsEqualFourSingleDots) {
  for (const KQuantDot& k : kKQuantDots) {
    for (int64_t blocks : {1, 3, 6}) {
      const std::vector<uint8_t> w = RandomKQuantRows(rng_, k.type, 1, blocks);
      const std::vector<BlockQ8_K> x = RandomQ8_KBlocks(rng_, 4 * blocks);  // four rows of `blocks`
      float out[4];
      (ks_->*k.dot4)(w.data(), x.data(), blocks * sizeof(BlockQ8_K), blocks * 256, out);
      for (int r = 0; r < 4; ++r) {
        const float want = (ks_->*k.dot)(w.data(), x.data() + r * blocks, blocks * 256);
        EXPECT_NEAR(out[r], want, 1e-5f * (std::fabs(want) + 1))
            << gguf::TypeName(k.type) << " row " << r << " blocks " << blocks;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Matrix products.

struct MatMulCase {
  TensorType type;
  double rel_tol;  // relative to sum_i |w_i x_i| of each output
};

TEST_P(KernelSetTest, MatMulMatchesDoubleReferenceOnDequantizedWeights) {
  constexpr int64_t kRows = 37, kCols = 96, kLdx = 100, kLdy = 41;
  const std::vector<float> w = RandomFloats(rng_, kRows * kCols);
  for (const MatMulCase& c : {MatMulCase{TensorType::kF32, 1e-5}, MatMulCase{TensorType::kF16, 1e-5},
                              MatMulCase{TensorType::kBF16, 1e-5}, MatMulCase{TensorType::kQ8_0, 1e-2},
                              MatMulCase{TensorType::kQ4_0, 1e-2}, MatMulCase{TensorType::kQ4_1, 1e-2},
                              MatMulCase{TensorType::kQ5_0, 1e-2}, MatMulCase{TensorType::kQ5_1, 1e-2}}) {
    const std::vector<uint8_t> bytes = QuantizeTensor(c.type, w.data(), kRows, kCols);
    MatrixView view;
    view.type = c.type;
    view.data = bytes.data();
    view.rows = kRows;
    view.cols = kCols;
    view.row_bytes = RowBytes(c.type, kCols);
    ASSERT_EQ(bytes.size(), view.row_bytes * kRows);
    std::vector<float> wd(kRows * kCols);
    for (int64_t o = 0; o < kRows; ++o) {
      const std::vector<float> row = RefDequantize(c.type, view.row(o), kCols);
      std::copy(row.begin(), row.end(), wd.begin() + o * kCols);
    }
    for (int64_t n_x : {1, 5}) {
      std::vector<float> x = RandomFloats(rng_, n_x * kLdx);
      for (int64_t r = 0; r < n_x; ++r) std::fill(x.begin() + r * kLdx + kCols, x.begin() + (r + 1) * kLdx, kNaN);
      std::vector<float> y(n_x * kLdy, kNaN);
      MatMul(view, x.data(), kLdx, n_x, y.data(), kLdy, *ks_);
      for (int64_t r = 0; r < n_x; ++r) {
        for (int64_t o = 0; o < kRows; ++o) {
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < kCols; ++i) {
            // BF16 weights take activations rounded to BF16 (kernels.h).
            const float xi = c.type == TensorType::kBF16 ? RefBf16(RefFp32ToBf16(x[r * kLdx + i])) : x[r * kLdx + i];
            const double t = static_cast<double>(wd[o * kCols + i]) * xi;
            ref += t;
            mag += std::fabs(t);
          }
          ASSERT_NEAR(y[r * kLdy + o], ref, c.rel_tol * mag)
              << gguf::TypeName(c.type) << " n_x=" << n_x << " r=" << r << " o=" << o;
        }
        for (int64_t o = kRows; o < kLdy; ++o) EXPECT_TRUE(std::isnan(y[r * kLdy + o])) << "wrote padding";
      }
    }
  }
}

// The types with Q8_K activations.
bool IsKQuant(TensorType type) {
  return type == TensorType::kQ2_K || type == TensorType::kQ3_K || type == TensorType::kQ4_K ||
         type == TensorType::kQ5_K || type == TensorType::kQ6_K || type == TensorType::kIQ4_XS;
}

TEST_P(KernelSetTest, MatMulRowsFillsOnlyItsRangeAndAgreesWithMatMul) {
  constexpr int64_t kRows = 37, kNx = 5;
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0,
                          TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL, TensorType::kQ2_K,
                          TensorType::kQ3_K, TensorType::kIQ4_XS, TensorType::kQ4_K, TensorType::kQ5_K,
                          TensorType::kQ6_K}) {
    const int64_t cols = IsKQuant(type) ? 3 * 256 : 96;
    const std::vector<float> x = RandomFloats(rng_, kNx * cols);
    // K-quants and IQ4_NL (no encoder) as random blocks: every bit pattern,
    // not just what an encoder writes.
    std::vector<uint8_t> bytes;
    if (IsKQuant(type)) {
      bytes = RandomKQuantRows(rng_, type, kRows, cols / 256);
    } else if (type == TensorType::kIQ4_NL) {
      bytes = RandomLegacyRow(rng_, type, kRows * cols / 32);
    } else {
      bytes = QuantizeTensor(type, RandomFloats(rng_, kRows * cols).data(), kRows, cols);
    }
    MatrixView view{type, bytes.data(), kRows, cols, RowBytes(type, cols)};
    std::vector<float> whole(kNx * kRows);
    MatMul(view, x.data(), cols, kNx, whole.data(), kRows, *ks_);

    Activations act;
    act.Prepare(type, x.data(), cols, kNx, cols, *ks_);
    EXPECT_EQ(act.n_rows(), kNx);
    EXPECT_EQ(act.quantized(), type != TensorType::kF32 && type != TensorType::kF16 && type != TensorType::kBF16);
    std::vector<float> parts(kNx * kRows, kNaN);
    MatMulRows(view, act, parts.data(), kRows, 10, 23, *ks_);
    for (int64_t r = 0; r < kNx; ++r) {
      for (int64_t o = 0; o < kRows; ++o) {
        if (o >= 10 && o < 23) {
          EXPECT_EQ(parts[r * kRows + o], whole[r * kRows + o]) << gguf::TypeName(type);
        } else {
          EXPECT_TRUE(std::isnan(parts[r * kRows + o])) << gguf::TypeName(type) << " o=" << o;
        }
      }
    }
    MatMulRows(view, act, parts.data(), kRows, 0, 10, *ks_);
    MatMulRows(view, act, parts.data(), kRows, 23, kRows, *ks_);
    EXPECT_EQ(parts, whole) << gguf::TypeName(type);
  }
}

TEST_P(KernelSetTest, ActivationsForKQuantsAreTheirQ8_KBlocks) {
  constexpr int64_t kCols = 2 * 256, kLdx = kCols + 8, kNx = 3;
  const std::vector<float> x = RandomFloats(rng_, kNx * kLdx);
  for (TensorType type : {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
    Activations act;
    act.Prepare(type, x.data(), kLdx, kNx, kCols, *ks_);
    ASSERT_TRUE(act.quantized());
    EXPECT_EQ(act.q8_row_bytes(), 2 * sizeof(BlockQ8_K));
    for (int64_t r = 0; r < kNx; ++r) {
      const std::vector<BlockQ8_K> want = RefQuantizeQ8_K(x.data() + r * kLdx, kCols);
      const BlockQ8_K* got = static_cast<const BlockQ8_K*>(act.q8_row(r));
      for (int b = 0; b < 2; ++b) ExpectSameQ8_K(got[b], want[b], std::string(gguf::TypeName(type)) + " r=" + std::to_string(r));
    }
  }
}

TEST_P(KernelSetTest, MatMulOnTheKQuantsUsesTheirDequantization) {
  // Several rows of 3 super-blocks, 1 to 6 activation rows (four-row calls
  // and their remainders): each product is the dot of DequantizeRow's output
  // with the activations rounded to Q8_K, up to float rounding; and within
  // the Q8_K rounding of the activations themselves.
  constexpr int64_t kRows = 5, kCols = 3 * 256;
  for (TensorType type : {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
    const std::vector<uint8_t> w = RandomKQuantRows(rng_, type, kRows, kCols / 256);
    const MatrixView view{type, w.data(), kRows, kCols, RowBytes(type, kCols)};
    for (int64_t n_x : {1, 4, 6}) {
      const std::vector<float> x = RandomFloats(rng_, n_x * kCols);
      std::vector<float> y(n_x * kRows, kNaN);
      MatMul(view, x.data(), kCols, n_x, y.data(), kRows, *ks_);
      for (int64_t r = 0; r < n_x; ++r) {
        const std::vector<BlockQ8_K> xq = RefQuantizeQ8_K(x.data() + r * kCols, kCols);
        for (int64_t o = 0; o < kRows; ++o) {
          double ref, mag;
          DequantizedDot(type, view.row(o), xq.data(), kCols, &ref, &mag);
          const std::string where = std::string(gguf::TypeName(type)) + " n_x=" + std::to_string(n_x) +
                                    " r=" + std::to_string(r) + " o=" + std::to_string(o);
          ASSERT_NEAR(y[r * kRows + o], ref, 1e-5 * mag) << where;
          std::vector<float> wd(kCols);
          DequantizeRow(type, view.row(o), wd.data(), kCols, *ks_);
          double exact = 0, exact_mag = 0;
          for (int64_t i = 0; i < kCols; ++i) {
            exact += static_cast<double>(wd[i]) * x[r * kCols + i];
            exact_mag += std::fabs(static_cast<double>(wd[i]) * x[r * kCols + i]);
          }
          ASSERT_NEAR(y[r * kRows + o], exact, 1e-2 * exact_mag) << where;
        }
      }
    }
  }
}

// Packed weights (packed.h): every back-end with packed kernels gives what
// the scalar kernels give on the file's layout, for tails of rows (past the
// last group of 16), odd block counts, 1 to 9 activation rows (tiles of four
// and their remainders) and ranges that cut groups.
TEST_P(KernelSetTest, PackedMatMulAgreesWithTheFileLayout) {
  constexpr int64_t kRows = 11 * kPackRows + 5;
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ5_0, TensorType::kIQ4_NL, TensorType::kBF16,
                          TensorType::kF16, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K, TensorType::kQ2_K,
                          TensorType::kQ3_K, TensorType::kIQ4_XS}) {
    if (!CanPack(type, *ks_)) continue;
    // Odd block counts: 7 blocks of 32, or 3 super-blocks of 256 for the K-quants.
    const int64_t kCols = IsKQuant(type) ? 3 * kQK_K : 7 * kQK;
    // K-quant blocks of random bytes: every scale, min, quant and fifth bit
    // pattern, the extremes included.
    // IQ4_NL (no encoder) as random blocks as well.
    const std::vector<uint8_t> bytes =
        IsKQuant(type)                 ? RandomKQuantRows(rng_, type, kRows, kCols / kQK_K)
        : type == TensorType::kIQ4_NL ? RandomLegacyRow(rng_, type, kRows * kCols / kQK)
                                       : QuantizeTensor(type, RandomFloats(rng_, kRows * kCols).data(), kRows, kCols);
    const MatrixView plain{type, bytes.data(), kRows, kCols, RowBytes(type, kCols)};
    PackedArena arena(PackedBytes(type, kRows, kCols));
    const MatrixView view = arena.Pack(plain);
    ASSERT_EQ(view.packed_rows, 11 * kPackRows);
    ASSERT_EQ(arena.used_bytes(), 11 * PackedGroupBytes(type, kCols));
    ASSERT_EQ(reinterpret_cast<uintptr_t>(view.packed) % 64, 0u);
    std::vector<float> dequantized(kRows * kCols);
    for (int64_t o = 0; o < kRows; ++o) DequantizeRow(type, plain.row(o), dequantized.data() + o * kCols, kCols, ScalarKernels());
    for (int64_t n_x : {1, 2, 3, 4, 5, 9, 16, 21}) {  // 16 and 21: full and split AMX tiles
      const std::vector<float> x = RandomFloats(rng_, n_x * kCols);
      std::vector<float> expect(n_x * kRows), got(n_x * kRows, kNaN);
      MatMul(plain, x.data(), kCols, n_x, expect.data(), kRows, ScalarKernels());
      // sum |w x| of each output: random K-quant blocks give large terms that cancel.
      auto magnitude = [&](int64_t i) {
        const int64_t r = i / kRows, o = i % kRows;
        double sum = 0;
        for (int64_t c = 0; c < kCols; ++c) sum += std::fabs(dequantized[o * kCols + c] * x[r * kCols + c]);
        return sum;
      };
      Activations act;
      act.Prepare(type, x.data(), kCols, n_x, kCols, *ks_);
      // Ranges that start and end inside groups and inside the tail (holding
      // 1, 2 and 5 whole groups), then the whole matrix (11 whole groups: one
      // activation row streams them as four quarters of 2, then 3 more).
      for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 5}, {5, 21}, {21, 50}, {50, 96}, {96, kRows}}) {
        MatMulRows(view, act, got.data(), kRows, begin, end, *ks_);
      }
      std::vector<float> whole(n_x * kRows, kNaN);
      MatMulRows(view, act, whole.data(), kRows, 0, kRows, *ks_);
      for (int64_t i = 0; i < n_x * kRows; ++i) ASSERT_EQ(whole[i], got[i]) << gguf::TypeName(type) << " i=" << i;
      for (int64_t i = 0; i < n_x * kRows; ++i) {
        // The scalar packed kernel repeats the scalar arithmetic exactly; vector
        // ones sum blocks in another order.
        if (ks_ == &ScalarKernels()) {
          ASSERT_EQ(got[i], expect[i]) << gguf::TypeName(type) << " n_x=" << n_x << " i=" << i;
        } else {
          // BF16 / F16 sum 224 float products per row where the integer kernels sum 7 block results.
          const float tol = type == TensorType::kBF16 || type == TensorType::kF16 ? 1e-4f : 1e-5f;
          const double bound = IsKQuant(type) ? 2e-6 * magnitude(i) : tol * (1 + std::fabs(expect[i]));
          ASSERT_NEAR(got[i], expect[i], bound) << gguf::TypeName(type) << " n_x=" << n_x << " i=" << i;
        }
      }
    }
  }
}

TEST_P(KernelSetTest, GemmF32X16MatchesDoubleReference) {
  // Columns odd (the even/odd unrolling's tail), 1 to 4 activation rows with a
  // row stride wider than the row.
  for (int64_t cols : {1, 2, 37, 256}) {
    std::vector<float> wt_storage(cols * 16 + 16);
    float* wt = wt_storage.data() + (16 - reinterpret_cast<uintptr_t>(wt_storage.data()) / sizeof(float) % 16) % 16;
    const std::vector<float> w = RandomFloats(rng_, cols * 16);
    std::copy(w.begin(), w.end(), wt);
    const int64_t ldx = cols + 3;
    const std::vector<float> x = RandomFloats(rng_, 4 * ldx);
    for (int n_x = 1; n_x <= 4; ++n_x) {
      std::vector<float> out(4 * 16, kNaN);
      ks_->gemm_f32_x16(wt, cols, x.data(), ldx, n_x, out.data());
      for (int r = 0; r < 4; ++r) {
        for (int i = 0; i < 16; ++i) {
          if (r >= n_x) {
            EXPECT_TRUE(std::isnan(out[r * 16 + i])) << "wrote past n_x";
            continue;
          }
          double ref = 0, mag = 0;
          for (int64_t c = 0; c < cols; ++c) {
            ref += static_cast<double>(wt[c * 16 + i]) * x[r * ldx + c];
            mag += std::fabs(static_cast<double>(wt[c * 16 + i]) * x[r * ldx + c]);
          }
          ASSERT_NEAR(out[r * 16 + i], ref, 1e-6 * (1 + mag)) << "cols=" << cols << " n_x=" << n_x << " r=" << r;
        }
      }
    }
  }
}

TEST_P(KernelSetTest, AttentionRowKernelsMatchDoubleReference) {
  // Head sizes below, at and above the 64 the vector kernels keep in
  // registers (24 and 40 end on a half step of the avx2 kernels' 16-float
  // loop); 1 to 6 query heads (passes of four and their remainders); rows
  // strided.
  for (int64_t dim : {1, 17, 24, 40, 64, 80, 128}) {
    for (int n_q : {1, 3, 4, 6}) {
      constexpr int64_t kRows = 37;
      const uint64_t stride = dim * 2 + 3, ld = dim + 5, ld_w = kRows + 2;
      const std::vector<float> rows = RandomFloats(rng_, kRows * stride);
      const std::vector<float> q = RandomFloats(rng_, n_q * ld), w = RandomFloats(rng_, n_q * ld_w);
      std::vector<float> scores(n_q * ld_w, kNaN), values(n_q * ld, kNaN);
      ks_->dot_rows_f32(q.data(), ld, n_q, rows.data(), stride, kRows, dim, scores.data(), ld_w);
      ks_->weighted_rows_f32(w.data(), ld_w, n_q, rows.data(), stride, kRows, dim, values.data(), ld);
      for (int h = 0; h < n_q; ++h) {
        for (int64_t t = 0; t < kRows; ++t) {
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < dim; ++i) {
            ref += static_cast<double>(q[h * ld + i]) * rows[t * stride + i];
            mag += std::fabs(static_cast<double>(q[h * ld + i]) * rows[t * stride + i]);
          }
          ASSERT_NEAR(scores[h * ld_w + t], ref, 1e-6 * (1 + mag)) << "dim=" << dim << " n_q=" << n_q << " h=" << h;
        }
        for (int64_t i = 0; i < dim; ++i) {
          double ref = 0, mag = 0;
          for (int64_t t = 0; t < kRows; ++t) {
            ref += static_cast<double>(w[h * ld_w + t]) * rows[t * stride + i];
            mag += std::fabs(static_cast<double>(w[h * ld_w + t]) * rows[t * stride + i]);
          }
          ASSERT_NEAR(values[h * ld + i], ref, 1e-6 * (1 + mag)) << "dim=" << dim << " n_q=" << n_q << " h=" << h;
        }
        for (int64_t i = dim; i < static_cast<int64_t>(ld); ++i) {
          EXPECT_TRUE(std::isnan(values[h * ld + i])) << "wrote past dim";
        }
      }
    }
  }
}

TEST_P(KernelSetTest, SoftmaxMatchesDoubleReference) {
  // Lengths around the vector widths; scores spread so that some exponents
  // underflow to zero; a position beyond n must stay untouched.
  for (int64_t n : {1, 2, 7, 8, 15, 16, 17, 33, 100, 1000}) {
    for (float spread : {1.0f, 30.0f, 200.0f}) {
      std::vector<float> s = RandomFloats(rng_, n + 1);
      for (float& v : s) v *= spread;
      s[n] = kNaN;
      const std::vector<float> in = s;
      constexpr float kScale = 0.125f;
      ks_->softmax_f32(s.data(), n, kScale);
      double mx = -INFINITY, sum = 0;
      for (int64_t t = 0; t < n; ++t) mx = std::max(mx, static_cast<double>(in[t] * kScale));
      for (int64_t t = 0; t < n; ++t) sum += std::exp(static_cast<double>(in[t] * kScale) - mx);
      double total = 0;
      for (int64_t t = 0; t < n; ++t) {
        const double arg = static_cast<double>(in[t] * kScale) - mx;
        const double want = std::exp(arg) / sum;
        // Rounding the float argument costs up to |arg| * 2^-24 relative.
        ASSERT_NEAR(s[t], want, want * (1e-6 + 1.2e-7 * std::fabs(arg)) + 1e-38)
            << "n=" << n << " spread=" << spread << " t=" << t;
        total += s[t];
      }
      EXPECT_NEAR(total, 1.0, 1e-5) << "n=" << n;
      EXPECT_TRUE(std::isnan(s[n])) << "wrote past n";
    }
  }
}

TEST_P(KernelSetTest, SwiGluMatchesDoubleReference) {
  // Lengths around the vector widths (tails), gates from -100 to 100 (exp
  // under- and overflowing the sigmoid), a position beyond n left alone.
  for (int64_t n : {1, 7, 8, 15, 16, 17, 100, 2816}) {
    for (float spread : {1.0f, 8.0f, 100.0f}) {
      std::vector<float> g = RandomFloats(rng_, n + 1, -spread, spread);
      const std::vector<float> u = RandomFloats(rng_, n + 1, -2.0f, 2.0f);
      g[n] = kNaN;
      const std::vector<float> in = g;
      ks_->swiglu_f32(g.data(), u.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double want = in[i] / (1.0 + std::exp(-static_cast<double>(in[i]))) * u[i];
        ASSERT_NEAR(g[i], want, 2e-6 * std::fabs(want) + 1e-30) << "n=" << n << " x=" << in[i];
      }
      EXPECT_TRUE(std::isnan(g[n])) << "wrote past n";
    }
  }
}

TEST_P(KernelSetTest, PackedViewsFallBackToTheFileLayoutWithoutPackedKernels) {
  // A view packed for one back-end stays usable with any other: back-ends
  // without packed kernels read the original rows.
  constexpr int64_t kRows = 2 * kPackRows, kCols = 2 * kQK_K;
  const std::vector<float> w = RandomFloats(rng_, kRows * kCols), x = RandomFloats(rng_, kCols);
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kBF16, TensorType::kF16, TensorType::kQ4_K,
                          TensorType::kQ5_K, TensorType::kQ6_K, TensorType::kQ2_K, TensorType::kQ3_K,
                          TensorType::kIQ4_XS}) {
    // The types without an encoder as random blocks.
    const std::vector<uint8_t> bytes = CanQuantizeTo(type) ? QuantizeTensor(type, w.data(), kRows, kCols)
                                                           : RandomKQuantRows(rng_, type, kRows, kCols / kQK_K);
    const MatrixView plain{type, bytes.data(), kRows, kCols, RowBytes(type, kCols)};
    if (!CanPack(type, ScalarKernels())) GTEST_SKIP() << "scalar packed kernels expected";
    PackedArena arena(PackedBytes(type, kRows, kCols));
    const MatrixView packed = arena.Pack(plain);
    ASSERT_NE(packed.packed, nullptr);
    std::vector<float> a(kRows), b(kRows);
    MatMul(plain, x.data(), kCols, 1, a.data(), kRows, *ks_);
    MatMul(packed, x.data(), kCols, 1, b.data(), kRows, *ks_);
    for (int64_t o = 0; o < kRows; ++o) EXPECT_NEAR(a[o], b[o], 1e-5f * (1 + std::fabs(a[o]))) << o;
  }
}

TEST(PackedWeightsTest, SmallMatricesAndAFullArenaStayUnpacked) {
  const std::vector<uint8_t> bytes(32 * sizeof(BlockQ8_0), 0);
  PackedArena arena(PackedBytes(TensorType::kQ8_0, 16, kQK));
  EXPECT_EQ(arena.Pack({TensorType::kQ8_0, bytes.data(), 15, kQK, sizeof(BlockQ8_0)}).packed, nullptr);
  EXPECT_EQ(arena.used_bytes(), 0u);
  EXPECT_EQ(arena.Pack({TensorType::kQ8_0, bytes.data(), 32, kQK, sizeof(BlockQ8_0)}).packed, nullptr) << "no room";
  const MatrixView v = arena.Pack({TensorType::kQ8_0, bytes.data(), 16, kQK, sizeof(BlockQ8_0)});
  EXPECT_NE(v.packed, nullptr);
  EXPECT_EQ(v.packed_rows, 16);
  EXPECT_EQ(arena.Pack({TensorType::kQ8_0, bytes.data(), 16, kQK, sizeof(BlockQ8_0)}).packed, nullptr) << "full";
  EXPECT_FALSE(CanPack(TensorType::kF32, ScalarKernels()));
  EXPECT_FALSE(CanPack(TensorType::kQ4_1, ScalarKernels()));
  // BF16 and F16 pack whole 32-column blocks only.
  const std::vector<uint8_t> half(16 * 48 * 2, 0);
  for (TensorType type : {TensorType::kBF16, TensorType::kF16}) {
    PackedArena half_arena(PackedBytes(type, 16, 64));
    EXPECT_EQ(half_arena.Pack({type, half.data(), 16, 48, 96}).packed, nullptr) << "48 columns";
    EXPECT_NE(half_arena.Pack({type, half.data(), 16, 32, 64}).packed, nullptr);
  }
}

TEST(PackedWeightsTest, HalfLayoutPutsAColumnPairOfEachRowPerLane) {
  constexpr int64_t kCols = 2 * kQK;
  std::vector<uint16_t> rows(kPackRows * kCols);
  for (int i = 0; i < kPackRows; ++i) {
    for (int c = 0; c < kCols; ++c) rows[i * kCols + c] = static_cast<uint16_t>(i * 1000 + c);
  }
  PackedArena arena(PackedBytes(TensorType::kBF16, kPackRows, kCols));
  const MatrixView v =
      arena.Pack({TensorType::kBF16, reinterpret_cast<const uint8_t*>(rows.data()), kPackRows, kCols, kCols * 2});
  ASSERT_NE(v.packed, nullptr);
  EXPECT_EQ(v.packed_group_bytes, static_cast<uint64_t>(kCols / 2 * 64));
  for (int p = 0; p < kCols / 2; ++p) {
    for (int i = 0; i < kPackRows; ++i) {
      uint16_t pair[2];
      std::memcpy(pair, v.packed + p * 64 + i * 4, 4);
      ASSERT_EQ(pair[0], i * 1000 + 2 * p) << p << " " << i;
      ASSERT_EQ(pair[1], i * 1000 + 2 * p + 1) << p << " " << i;
    }
  }
}

TEST(PackedWeightsTest, LayoutPutsFourWeightsOfEachRowPerLane) {
  // Row i, weight e = (i + e) % 7 - 3 for Q8_0 with scale 1: the packed bytes
  // are checked against the layout spelled out in packed.h.
  constexpr int64_t kCols = 2 * kQK;
  std::vector<BlockQ8_0> rows(kPackRows * 2);
  for (int i = 0; i < kPackRows; ++i) {
    for (int b = 0; b < 2; ++b) {
      rows[i * 2 + b].d = Fp32ToFp16(static_cast<float>(i + 1));
      for (int e = 0; e < kQK; ++e) rows[i * 2 + b].qs[e] = static_cast<int8_t>((i + b * kQK + e) % 7 - 3);
    }
  }
  PackedArena arena(PackedBytes(TensorType::kQ8_0, kPackRows, kCols));
  const uint8_t* g = arena
                         .Pack({TensorType::kQ8_0, reinterpret_cast<const uint8_t*>(rows.data()), kPackRows, kCols,
                                2 * sizeof(BlockQ8_0)})
                         .packed;
  ASSERT_NE(g, nullptr);
  // A pair of blocks: one line of both blocks' scales, then block 0's quants
  // (8 chunks of 64 bytes), then block 1's.
  static_assert(PackedScalesOffset(0, 512) == 0 && PackedScalesOffset(1, 512) == 32);
  static_assert(PackedQuantsOffset(0, 512) == 64 && PackedQuantsOffset(1, 512) == 576);
  static_assert(PackedScalesOffset(2, 512) == 1088 && PackedQuantsOffset(2, 256) == 640);
  for (int b = 0; b < 2; ++b) {
    for (int i = 0; i < kPackRows; ++i) {
      for (int e = 0; e < kQK; ++e) {
        const int expect = (i + b * kQK + e) % 7 - 3 + 128;
        ASSERT_EQ(g[64 + b * 512 + (e / 4) * 64 + i * 4 + e % 4], expect) << b << " " << i << " " << e;
      }
      uint16_t d;
      std::memcpy(&d, g + b * 32 + i * 2, 2);
      EXPECT_EQ(Fp16ToFp32(d), static_cast<float>(i + 1)) << b << " " << i;
    }
  }
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ8_0, kCols), 64u + 2 * 512);
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ4_0, 3 * kQK), 2 * 64u + 3 * 256) << "odd block count: a half-empty scale line";
}

// Packs 16 rows of `blocks` K-quant blocks each (row after row in `rows`)
// into `arena` and returns their group.
template <class Block>
const uint8_t* PackOneKQuantGroup(PackedArena& arena, TensorType type, const std::vector<Block>& rows, int64_t blocks) {
  return arena
      .Pack({type, reinterpret_cast<const uint8_t*>(rows.data()), kPackRows, blocks * kQK_K,
             static_cast<uint64_t>(blocks) * sizeof(Block)})
      .packed;
}

// Sixteen rows of `blocks` super-blocks, every byte numbered: d = i + 1,
// dmin = s + 1 (where the type has one), scale byte k = 16 s + k + i, quant
// byte c = QuantByte(i, s, c); Q3_K's hmask byte l = (7 i + l + s) % 256,
// IQ4_XS's scales_h = 1000 i + s.
int QuantByte(int i, int s, int c) { return (7 * i + 3 * c + s) % 256; }

template <class Block>
std::vector<Block> NumberedRows(int64_t blocks) {
  std::vector<Block> rows(kPackRows * blocks);
  for (int i = 0; i < kPackRows; ++i) {
    for (int s = 0; s < blocks; ++s) {
      Block& b = rows[i * blocks + s];
      b.d = Fp32ToFp16(static_cast<float>(i + 1));
      if constexpr (std::is_same_v<Block, BlockIQ4_XS>) {
        b.scales_h = static_cast<uint16_t>(1000 * i + s);
        for (size_t k = 0; k < sizeof(b.scales_l); ++k) b.scales_l[k] = static_cast<uint8_t>(16 * s + k + i);
      } else {
        for (size_t k = 0; k < sizeof(b.scales); ++k) b.scales[k] = static_cast<uint8_t>(16 * s + k + i);
      }
      if constexpr (std::is_same_v<Block, BlockQ2_K> || std::is_same_v<Block, BlockQ4_K>) {
        b.dmin = Fp32ToFp16(static_cast<float>(s + 1));
      }
      if constexpr (std::is_same_v<Block, BlockQ3_K>) {
        for (int l = 0; l < 32; ++l) b.hmask[l] = static_cast<uint8_t>((7 * i + l + s) % 256);
      }
      for (size_t c = 0; c < sizeof(b.qs); ++c) b.qs[c] = static_cast<uint8_t>(QuantByte(i, s, static_cast<int>(c)));
    }
  }
  return rows;
}

// The fp16 at `p` + 2i: `want`.
void ExpectHalfOfRow(const uint8_t* p, int i, float want) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  EXPECT_EQ(Fp16ToFp32(h), want) << "row " << i;
}

// One packed group of NumberedRows<Block>(blocks), with the arena holding it.
template <class Block>
struct NumberedGroup {
  NumberedGroup(TensorType type, int64_t blocks)
      : arena(PackedBytes(type, kPackRows, blocks * kQK_K)),
        group(PackOneKQuantGroup(arena, type, NumberedRows<Block>(blocks), blocks)) {}
  PackedArena arena;
  const uint8_t* group;
};

TEST(PackedWeightsTest, Q4_KLayoutTransposesScalesAndInterleavesQuants) {
  // NumberedRows, checked against packed.h.
  constexpr int64_t kBlocks = 2;
  const NumberedGroup<BlockQ4_K> packed(TensorType::kQ4_K, kBlocks);
  const uint8_t* g = packed.group;
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ4_K, kBlocks * kQK_K), kBlocks * kPackRows * sizeof(BlockQ4_K))
      << "the file's bytes, rearranged";
  for (int s = 0; s < kBlocks; ++s) {
    const uint8_t* sb = g + s * 2304;
    for (int i = 0; i < kPackRows; ++i) {
      ExpectHalfOfRow(sb, i, static_cast<float>(i + 1));
      ExpectHalfOfRow(sb + 32, i, static_cast<float>(s + 1));
      for (int k = 0; k < 12; ++k) ASSERT_EQ(sb[64 + 16 * k + i], 16 * s + k + i) << s << " " << i << " " << k;
      for (int c = 0; c < kQK_K / 2; ++c) {
        const int t = c / 32, line = c % 32 / 4;
        ASSERT_EQ(sb[256 + 512 * t + 64 * line + 4 * i + c % 4], QuantByte(i, s, c)) << s << " " << i << " " << c;
      }
    }
  }
}

TEST(PackedWeightsTest, Q3_KLayoutPutsTheDsFirstThenScalesQuantsAndThirdBits) {
  // NumberedRows, checked against packed.h: element e = 128 h + 32 j + l has
  // its 2-bit quant at bits 2j of qs[32 h + l] and its third bit at bit 4h + j
  // of hmask[l].
  constexpr int64_t kBlocks = 3;
  const NumberedGroup<BlockQ3_K> packed(TensorType::kQ3_K, kBlocks);
  const uint8_t* g = packed.group;
  ASSERT_NE(g, nullptr);
  // The d's: 3 * 32 bytes, padded to two lines (with zeros); then 27 lines per super-block.
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ3_K, kBlocks * kQK_K), 128 + kBlocks * 27 * 64);
  for (int b = 96; b < 128; ++b) EXPECT_EQ(g[b], 0) << b;
  for (int s = 0; s < kBlocks; ++s) {
    const uint8_t* sb = g + 128 + s * 27 * 64;
    for (int i = 0; i < kPackRows; ++i) {
      ExpectHalfOfRow(g + 32 * s, i, static_cast<float>(i + 1));
      for (int k = 0; k < 12; ++k) ASSERT_EQ(sb[16 * k + i], 16 * s + k + i) << s << " " << i << " " << k;
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, j = e % 128 / 32, l = e % 32, q = e / 32, k = e % 32 / 4;
        const int quant = (QuantByte(i, s, 32 * h + l) >> (2 * j)) & 3;
        const int bit = (((7 * i + l + s) % 256) >> (4 * h + j)) & 1;
        const uint8_t* lines = sb + 192 + 192 * q;
        ASSERT_EQ((lines[64 * (k / 4) + 4 * i + e % 4] >> (2 * (k % 4))) & 3, quant) << s << " " << i << " " << e;
        ASSERT_EQ((lines[128 + 4 * i + e % 4] >> k) & 1, bit) << s << " " << i << " " << e;
      }
    }
  }
}

TEST(PackedWeightsTest, Q2_KLayoutTransposesScalesThenQuantLines) {
  // NumberedRows, checked against packed.h.
  constexpr int64_t kBlocks = 2;
  const NumberedGroup<BlockQ2_K> packed(TensorType::kQ2_K, kBlocks);
  const uint8_t* g = packed.group;
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ2_K, kBlocks * kQK_K), kBlocks * kPackRows * sizeof(BlockQ2_K))
      << "the file's bytes, rearranged";
  for (int s = 0; s < kBlocks; ++s) {
    const uint8_t* sb = g + s * 21 * 64;
    for (int i = 0; i < kPackRows; ++i) {
      ExpectHalfOfRow(sb, i, static_cast<float>(i + 1));
      ExpectHalfOfRow(sb + 32, i, static_cast<float>(s + 1));
      for (int k = 0; k < 16; ++k) ASSERT_EQ(sb[64 + 16 * k + i], 16 * s + k + i) << s << " " << i << " " << k;
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, j = e % 128 / 32, l = e % 32, q = e / 32, k = e % 32 / 4;
        const int quant = (QuantByte(i, s, 32 * h + l) >> (2 * j)) & 3;
        ASSERT_EQ((sb[320 + 128 * q + 64 * (k / 4) + 4 * i + e % 4] >> (2 * (k % 4))) & 3, quant)
            << s << " " << i << " " << e;
      }
    }
  }
}

TEST(PackedWeightsTest, IQ4_XSLayoutPairsSubBlocksInEachByte) {
  // NumberedRows, checked against packed.h.
  constexpr int64_t kBlocks = 2;
  const NumberedGroup<BlockIQ4_XS> packed(TensorType::kIQ4_XS, kBlocks);
  const uint8_t* g = packed.group;
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(PackedGroupBytes(TensorType::kIQ4_XS, kBlocks * kQK_K), kBlocks * kPackRows * sizeof(BlockIQ4_XS))
      << "the file's bytes, rearranged";
  for (int s = 0; s < kBlocks; ++s) {
    const uint8_t* sb = g + s * 2176;
    for (int i = 0; i < kPackRows; ++i) {
      ExpectHalfOfRow(sb, i, static_cast<float>(i + 1));
      uint16_t high;
      std::memcpy(&high, sb + 32 + 2 * i, 2);
      EXPECT_EQ(high, 1000 * i + s);
      for (int k = 0; k < 4; ++k) ASSERT_EQ(sb[64 + 16 * k + i], 16 * s + k + i) << s << " " << i << " " << k;
      // Element l (< 32) of sub-block j: its nibble in the file is the low
      // (l < 16) or high half of qs[16 j + l % 16]; packed, the low (j even)
      // or high half of byte 4 i + l % 4 of line l / 4 of pair j / 2.
      for (int j = 0; j < 8; ++j) {
        for (int l = 0; l < 32; ++l) {
          const int byte = QuantByte(i, s, 16 * j + l % 16);
          const int want = l < 16 ? byte & 15 : byte >> 4;
          const uint8_t packed = sb[128 + 512 * (j / 2) + 64 * (l / 4) + 4 * i + l % 4];
          ASSERT_EQ(j % 2 ? packed >> 4 : packed & 15, want) << s << " " << i << " " << j << " " << l;
        }
      }
    }
  }
}

TEST(PackedWeightsTest, Q5_KLayoutAddsTwoLinesOfFifthBitsPerPair) {
  // Row i: qs as Q4_K's test, fifth bit of element l of sub-block j = (l + j
  // + i) % 3 == 0; checked against packed.h. One super-block.
  std::vector<BlockQ5_K> rows(kPackRows);
  auto fifth = [](int i, int j, int l) { return (l + j + i) % 3 == 0 ? 1 : 0; };
  for (int i = 0; i < kPackRows; ++i) {
    BlockQ5_K& b = rows[i];
    b = BlockQ5_K{};
    b.d = Fp32ToFp16(static_cast<float>(i + 1));
    for (int c = 0; c < kQK_K / 2; ++c) b.qs[c] = static_cast<uint8_t>((7 * i + 3 * c) % 256);
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) b.qh[l] |= static_cast<uint8_t>(fifth(i, j, l) << j);
    }
  }
  PackedArena arena(PackedBytes(TensorType::kQ5_K, kPackRows, kQK_K));
  const uint8_t* g = PackOneKQuantGroup(arena, TensorType::kQ5_K, rows, 1);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ5_K, kQK_K), kPackRows * sizeof(BlockQ5_K));
  for (int i = 0; i < kPackRows; ++i) {
    uint16_t d;
    std::memcpy(&d, g + 2 * i, 2);
    EXPECT_EQ(Fp16ToFp32(d), static_cast<float>(i + 1));
    for (int t = 0; t < 4; ++t) {
      const uint8_t* pair = g + 256 + 640 * t;
      for (int c = 0; c < 32; ++c) ASSERT_EQ(pair[(c / 4) * 64 + 4 * i + c % 4], (7 * i + 3 * (32 * t + c)) % 256);
      for (int half = 0; half < 2; ++half) {
        for (int l = 0; l < 32; ++l) {
          const int k = l / 4;
          const int bit = (pair[512 + (k / 4) * 64 + 4 * i + l % 4] >> (2 * (k % 4) + half)) & 1;
          ASSERT_EQ(bit, fifth(i, 2 * t + half, l)) << i << " " << t << " " << half << " " << l;
        }
      }
    }
  }
}

TEST(PackedWeightsTest, Q6_KLayoutPutsTheDsFirstThenScalesAndSplitValues) {
  // Row i, super-block s: d = i + 1, scale j = j - 8 + s, element e = (5 e +
  // i + s) % 64, checked against packed.h; 3 super-blocks, so the d's take
  // 96 bytes padded to two lines.
  constexpr int64_t kBlocks = 3;
  std::vector<BlockQ6_K> rows(kPackRows * kBlocks);
  auto value = [](int i, int s, int e) { return (5 * e + i + s) % 64; };
  for (int i = 0; i < kPackRows; ++i) {
    for (int s = 0; s < kBlocks; ++s) {
      BlockQ6_K& b = rows[i * kBlocks + s];
      b = BlockQ6_K{};
      b.d = Fp32ToFp16(static_cast<float>(i + 1));
      for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(j - 8 + s);
      for (int e = 0; e < kQK_K; ++e) SetQ6_KValue(b, e, value(i, s, e));
      for (int e = 0; e < kQK_K; ++e) ASSERT_EQ(Q6_KValue(b, e), value(i, s, e)) << "set / get round trip";
    }
  }
  PackedArena arena(PackedBytes(TensorType::kQ6_K, kPackRows, kBlocks * kQK_K));
  const uint8_t* g = PackOneKQuantGroup(arena, TensorType::kQ6_K, rows, kBlocks);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ6_K, kBlocks * kQK_K), 128 + kBlocks * 3328u);
  EXPECT_EQ(PackedGroupBytes(TensorType::kQ6_K, 4 * kQK_K), 4 * kPackRows * sizeof(BlockQ6_K)) << "even: no padding";
  for (int s = 0; s < kBlocks; ++s) {
    const uint8_t* sb = g + 128 + s * 3328;
    for (int i = 0; i < kPackRows; ++i) {
      uint16_t d;
      std::memcpy(&d, g + 32 * s + 2 * i, 2);
      EXPECT_EQ(Fp16ToFp32(d), static_cast<float>(i + 1));
      for (int j = 0; j < 16; ++j) {
        ASSERT_EQ(static_cast<int8_t>(sb[16 * j + i]), j - 8 + s);
        const uint8_t* lines = sb + 256 + 192 * j;
        for (int m = 0; m < 4; ++m) {
          const uint8_t low = lines[4 * i + m], high = lines[64 + 4 * i + m], top = lines[128 + 4 * i + m];
          const int expect[4] = {value(i, s, 16 * j + m), value(i, s, 16 * j + 4 + m), value(i, s, 16 * j + 8 + m),
                                 value(i, s, 16 * j + 12 + m)};
          const int got[4] = {(low & 15) | (top & 3) << 4, (low >> 4) | (top >> 2 & 3) << 4,
                              (high & 15) | (top >> 4 & 3) << 4, (high >> 4) | (top >> 6) << 4};
          for (int k = 0; k < 4; ++k) ASSERT_EQ(got[k], expect[k]) << s << " " << i << " " << j << " " << m << " " << k;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, KernelSetTest,
                         ::testing::Values("scalar", "avx2", "avx512", "amx", "amx_emulated"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(KernelsTest, ActiveIsTheBestAvailableBackend) {
  if (std::getenv("MICROMOE_KERNELS") != nullptr) GTEST_SKIP() << "MICROMOE_KERNELS caps the choice";
  const KernelSet& active = Active();
  if (AmxKernels() != nullptr) {
    EXPECT_EQ(&active, AmxKernels());
  } else if (Avx512Kernels() != nullptr) {
    EXPECT_EQ(&active, Avx512Kernels());
  } else if (Avx2Kernels() != nullptr) {
    EXPECT_EQ(&active, Avx2Kernels());
  } else {
    EXPECT_EQ(&active, &ScalarKernels());
  }
}

TEST(KernelsTest, AmxSelfCheckRefusesWithoutFaultingWhereTilesAreMissing) {
  // On a CPU without AMX (or without the tile permission) the tile
  // instructions raise SIGILL; the check must catch it and say no, and only a
  // passing check may enable the amx back-end.
  const bool passes = AmxSelfCheckPasses();
  EXPECT_EQ(passes, AmxKernels() != nullptr);
  if (!GetCpuFeatures().amx_tile) {
    EXPECT_FALSE(passes);
    EXPECT_FALSE(AmxBf16SelfCheckPasses());
  }
}

TEST(KernelsTest, SupportedWeightTypes) {
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0,
                       TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL, TensorType::kQ2_K,
                       TensorType::kQ3_K, TensorType::kIQ4_XS, TensorType::kQ4_K, TensorType::kQ5_K,
                       TensorType::kQ6_K}) {
    EXPECT_TRUE(IsSupportedWeightType(t)) << gguf::TypeName(t);
  }
  for (TensorType t : {TensorType::kQ8_1, TensorType::kQ8_K}) {
    EXPECT_FALSE(IsSupportedWeightType(t)) << gguf::TypeName(t);
  }
}

}  // namespace
}  // namespace micromoe::kernels
