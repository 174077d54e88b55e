// QuantizeRow for the K-quants (Q4_K, Q5_K, Q6_K), checked through
// DequantizeRow (the definition of the values, itself tested against the
// GGUF layouts in kernels_test.cc) and against fields read off the blocks by
// the layouts as GGUF defines them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gguf/types.h"
#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "kernels/quantize.h"

namespace micromoe::kernels {
namespace {

using gguf::TensorType;

constexpr TensorType kKQuants[] = {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K};

// ---------------------------------------------------------------------------
// Reading blocks by the GGUF layouts.

uint64_t BlockBytes(TensorType type) { return gguf::FindTypeTraits(static_cast<uint32_t>(type))->block_bytes; }

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return Fp16ToFp32(h);
}

// Scale j and min j of the 12-byte K4 form (Q4_K, Q5_K): j < 4 in the low six
// bits of bytes j and j + 4; j >= 4 from the nibbles of byte j + 4 with the
// top bits of bytes j - 4 and j.
void ScaleMinK4(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Sub-blocks that share a scale: 32 values in Q4_K / Q5_K, 16 in Q6_K.
int SubBlockSize(TensorType type) { return type == TensorType::kQ6_K ? 16 : 32; }
int MaxCode(TensorType type) { return type == TensorType::kQ4_K ? 15 : type == TensorType::kQ5_K ? 31 : 63; }

// Every value sub-block `sub` of a block can dequantize to, formed as the
// dequantizers form it: d * sc * q - dmin * m (Q4_K, Q5_K; d, dmin at bytes 0
// and 2, scales from byte 4) or d * sc * (q - 32) (Q6_K: int8 scales at byte
// 192, d at 208).
std::vector<float> SubBlockGrid(TensorType type, const uint8_t* block, int sub) {
  std::vector<float> grid;
  if (type == TensorType::kQ6_K) {
    const float d = Half(block + 208);
    const int sc = static_cast<int8_t>(block[192 + sub]);
    for (int q = 0; q <= 63; ++q) grid.push_back(d * sc * (q - 32));
  } else {
    const float d = Half(block), dmin = Half(block + 2);
    int sc, m;
    ScaleMinK4(block + 4, sub, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    for (int q = 0; q <= MaxCode(type); ++q) grid.push_back(d1 * q - m1);
  }
  return grid;
}

std::vector<uint8_t> Quantize(TensorType type, const std::vector<float>& x) {
  std::vector<uint8_t> q(x.size() / kQK_K * BlockBytes(type));
  QuantizeRow(type, x.data(), q.data(), static_cast<int64_t>(x.size()));
  return q;
}

std::vector<float> Dequantize(TensorType type, const std::vector<uint8_t>& q, size_t n) {
  std::vector<float> y(n);
  DequantizeRow(type, q.data(), y.data(), static_cast<int64_t>(n));
  return y;
}

std::vector<float> Normal(uint32_t seed, size_t n, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> Uniform(uint32_t seed, size_t n) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double Rmse(const std::vector<float>& x, const std::vector<float>& y, size_t begin = 0, size_t end = SIZE_MAX) {
  end = std::min(end, x.size());
  double se = 0;
  for (size_t i = begin; i < end; ++i) se += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
  return std::sqrt(se / (end - begin));
}

// Every output is a point of its sub-block's stored grid, and the nearest one
// to the input (ties and float rounding aside): given the stored scales, no
// other code would have been closer.
void ExpectNearestGridPoints(TensorType type, const std::vector<float>& x, const std::vector<uint8_t>& q,
                             const std::vector<float>& y) {
  const int sub_size = SubBlockSize(type);
  for (size_t e = 0; e < x.size(); ++e) {
    const uint8_t* block = q.data() + e / kQK_K * BlockBytes(type);
    const std::vector<float> grid = SubBlockGrid(type, block, static_cast<int>(e % kQK_K) / sub_size);
    ASSERT_NE(std::find(grid.begin(), grid.end(), y[e]), grid.end()) << gguf::TypeName(type) << " e=" << e;
    double nearest = INFINITY;
    for (float g : grid) nearest = std::min(nearest, std::fabs(static_cast<double>(g) - x[e]));
    const double step = std::fabs(static_cast<double>(grid[1]) - grid[0]);
    ASSERT_LE(std::fabs(static_cast<double>(y[e]) - x[e]), nearest + 1e-6 * (step + std::fabs(x[e])))
        << gguf::TypeName(type) << " e=" << e << " x=" << x[e] << " y=" << y[e];
  }
}

TEST(QuantizeKTest, TheKQuantsCanBeWrittenAndOthersOfTheirFamilyCannot) {
  for (TensorType t : kKQuants) EXPECT_TRUE(CanQuantizeTo(t)) << gguf::TypeName(t);
  for (TensorType t : {TensorType::kQ2_K, TensorType::kQ3_K, TensorType::kQ8_K}) {
    EXPECT_FALSE(CanQuantizeTo(t)) << gguf::TypeName(t);
  }
}

TEST(QuantizeKTest, RandomRowsLandOnTheNearestPointOfTheStoredGrid) {
  for (TensorType type : kKQuants) {
    const std::vector<float> x = Normal(7, 4 * kQK_K, 0.02f);  // weight-like magnitudes
    const std::vector<uint8_t> q = Quantize(type, x);
    ExpectNearestGridPoints(type, x, q, Dequantize(type, q, x.size()));
  }
}

// On uniform values in [-1, 1] a sub-block's values span (nearly) the whole
// interval, and the format can always use the plain grid over it: nmax + 1
// codes with step 2 / nmax (Q4_K 15, Q5_K 31), or for Q6_K's symmetric codes
// -32..31 the step 1 / 32. Rounding to that grid has RMS error step / sqrt(12)
// and largest error step / 2. The fitted grids must do no worse in RMSE; a
// lone extreme may be clamped for the rest's sake, but by less than a step.
TEST(QuantizeKTest, UniformRowsDoNoWorseThanThePlainGridOverTheirRange) {
  const std::vector<float> x = Uniform(11, 64 * kQK_K);
  for (TensorType type : kKQuants) {
    const double step = type == TensorType::kQ6_K ? 1.0 / 32 : 2.0 / MaxCode(type);
    const std::vector<float> y = Dequantize(type, Quantize(type, x), x.size());
    EXPECT_LE(Rmse(x, y), step / std::sqrt(12.0)) << gguf::TypeName(type);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_LE(std::fabs(static_cast<double>(y[i]) - x[i]), step) << gguf::TypeName(type) << " i=" << i;
    }
  }
}

// Regression bounds on normal rows (sigma 1), a little above what this
// quantizer gives (Q4_K 0.0707, Q5_K 0.0349, Q6_K 0.0173; the reference
// quantizers of GGUF engines give about 0.0714, 0.0362, 0.0177), and the
// K-quants ahead of the legacy types of similar size (Q4_0 at the same 4.5
// bits per weight gives 0.086).
TEST(QuantizeKTest, NormalRowsStayWithinTheirRmseBounds) {
  const std::vector<float> x = Normal(3, 256 * kQK_K);
  const double q4_0 = Rmse(x, [&] {
    std::vector<uint8_t> q(x.size() / kQK * sizeof(BlockQ4_0));
    QuantizeRow(TensorType::kQ4_0, x.data(), q.data(), static_cast<int64_t>(x.size()));
    return Dequantize(TensorType::kQ4_0, q, x.size());
  }());
  struct Bound {
    TensorType type;
    double rmse;
  };
  for (const Bound& b : {Bound{TensorType::kQ4_K, 0.0720}, Bound{TensorType::kQ5_K, 0.0356},
                         Bound{TensorType::kQ6_K, 0.0177}}) {
    const double rmse = Rmse(x, Dequantize(b.type, Quantize(b.type, x), x.size()));
    EXPECT_LE(rmse, b.rmse) << gguf::TypeName(b.type);
    EXPECT_LT(rmse, 0.9 * q4_0) << gguf::TypeName(b.type);
  }
}

// Values already on a grid the format holds come back exactly. The row is
// dequantized from random fields, with what lets a quantizer recover them:
// each sub-block uses its lowest and highest codes (Q6_K: code -32, the side
// with the larger reach), and the largest 6-bit scale and min are 63 (Q6_K:
// the largest scale is -128), so d and dmin are the block's largest fitted
// scale and offset over 63 (over -128).
TEST(QuantizeKTest, ValuesOnTheGridRoundTripExactly) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> byte(0, 255);
  constexpr int kBlocks = 8;
  for (TensorType type : kKQuants) {
    std::vector<uint8_t> fields(kBlocks * BlockBytes(type));
    const int sub_size = SubBlockSize(type), n_sub = kQK_K / sub_size;
    for (int b = 0; b < kBlocks; ++b) {
      int codes[kQK_K];
      for (int s = 0; s < n_sub; ++s) {
        std::uniform_int_distribution<int> code(0, MaxCode(type)), at(0, sub_size - 1);
        for (int l = 0; l < sub_size; ++l) codes[s * sub_size + l] = code(rng);
        const int lo = at(rng), hi = (lo + 1 + at(rng) % (sub_size - 1)) % sub_size;
        codes[s * sub_size + lo] = 0;
        if (type != TensorType::kQ6_K) codes[s * sub_size + hi] = MaxCode(type);
      }
      uint8_t* blk = fields.data() + b * BlockBytes(type);
      const uint16_t d = static_cast<uint16_t>(0x1C00 + byte(rng) * 4);  // 2^-8 .. about 2^-6
      if (type == TensorType::kQ6_K) {
        BlockQ6_K k;
        std::memset(&k, 0, sizeof(k));
        k.d = static_cast<uint16_t>(d | 0x8000);  // negative: scale -128 maps to a positive step
        for (int s = 0; s < 16; ++s) {
          int sc = std::uniform_int_distribution<int>(-128, 127)(rng);
          if (sc == 0) sc = 1;
          k.scales[s] = static_cast<int8_t>(sc);
        }
        k.scales[byte(rng) % 16] = -128;
        for (int e = 0; e < kQK_K; ++e) {
          const int h = e / 128, g = (e % 128) / 32, l = e % 32;
          k.ql[64 * h + l + (g % 2 ? 32 : 0)] |= static_cast<uint8_t>(g < 2 ? codes[e] & 0xF : (codes[e] & 0xF) << 4);
          k.qh[32 * h + l] |= static_cast<uint8_t>((codes[e] >> 4) << (2 * g));
        }
        std::memcpy(blk, &k, sizeof(k));
      } else {
        int sc[8], mn[8];
        for (int s = 0; s < 8; ++s) {
          sc[s] = 1 + byte(rng) % 63;
          mn[s] = byte(rng) % 64;
        }
        sc[byte(rng) % 8] = 63;
        mn[byte(rng) % 8] = 63;
        const uint16_t dmin = static_cast<uint16_t>(0x1C00 + byte(rng) * 4);
        std::memcpy(blk, &d, 2);
        std::memcpy(blk + 2, &dmin, 2);
        for (int j = 0; j < 4; ++j) {
          blk[4 + j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
          blk[8 + j] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
          blk[12 + j] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
        }
        uint8_t* qs = blk + (type == TensorType::kQ4_K ? 16 : 48);
        uint8_t* qh = blk + 16;  // Q5_K only
        for (int e = 0; e < kQK_K; ++e) {
          const int c = e / 64, l = e % 32, upper = e % 64 >= 32;
          qs[32 * c + l] |= static_cast<uint8_t>(upper ? (codes[e] & 0xF) << 4 : codes[e] & 0xF);
          if (codes[e] & 16) qh[l] |= static_cast<uint8_t>(1u << (2 * c + upper));
        }
      }
    }
    const std::vector<float> x = Dequantize(type, fields, kBlocks * kQK_K);
    const std::vector<float> y = Dequantize(type, Quantize(type, x), x.size());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i]) << gguf::TypeName(type) << " i=" << i;
  }
}

TEST(QuantizeKTest, ZeroRowsGiveZeroScalesAndZeros) {
  const std::vector<float> x(2 * kQK_K, 0.0f);
  for (TensorType type : kKQuants) {
    const std::vector<uint8_t> q = Quantize(type, x);
    const std::vector<float> y = Dequantize(type, q, x.size());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], 0.0f) << gguf::TypeName(type) << " i=" << i;
    for (int b = 0; b < 2; ++b) {
      const uint8_t* blk = q.data() + b * BlockBytes(type);
      if (type == TensorType::kQ6_K) {
        EXPECT_EQ(blk[208] | blk[209], 0) << "d";
        for (int s = 0; s < 16; ++s) EXPECT_EQ(blk[192 + s], 0) << "scale " << s;
      } else {
        for (int i = 0; i < 16; ++i) EXPECT_EQ(blk[i], 0) << gguf::TypeName(type) << " d, dmin, scales byte " << i;
      }
    }
  }
}

// A value 1000 times the rest takes its block's scale range: the format's
// 6-bit (8-bit) sub-block scales are multiples of the block's d, which the
// outlier sets. What must hold: the outlier itself comes back to within half
// its sub-block's step, every output is finite and its grid's nearest point,
// the rest of the outlier's block is no worse than written as zeros would be,
// and the other blocks are encoded exactly as without the outlier.
TEST(QuantizeKTest, OneHugeOutlierStaysInItsBlock) {
  constexpr size_t kAt = 37;  // block 0, second sub-block
  const std::vector<float> clean = Normal(13, 3 * kQK_K);
  std::vector<float> x = clean;
  x[kAt] = 1000.0f;
  for (TensorType type : kKQuants) {
    const std::vector<uint8_t> q = Quantize(type, x);
    const std::vector<float> y = Dequantize(type, q, x.size());
    for (float v : y) ASSERT_TRUE(std::isfinite(v)) << gguf::TypeName(type);
    ExpectNearestGridPoints(type, x, q, y);
    const std::vector<float> grid = SubBlockGrid(type, q.data(), static_cast<int>(kAt) / SubBlockSize(type));
    EXPECT_LE(std::fabs(y[kAt] - x[kAt]), std::fabs(grid[1] - grid[0]) / 2 * (1 + 1e-6)) << gguf::TypeName(type);
    std::vector<float> rest(x.begin(), x.begin() + kQK_K), rest_y(y.begin(), y.begin() + kQK_K);
    rest.erase(rest.begin() + kAt);
    rest_y.erase(rest_y.begin() + kAt);
    EXPECT_LE(Rmse(rest, rest_y), Rmse(rest, std::vector<float>(rest.size(), 0.0f))) << gguf::TypeName(type);
    const std::vector<uint8_t> q_clean = Quantize(type, clean);
    const uint64_t bb = BlockBytes(type);
    EXPECT_TRUE(std::equal(q.begin() + bb, q.end(), q_clean.begin() + bb)) << gguf::TypeName(type);
  }
}

TEST(QuantizeKTest, LargeAndTinyMagnitudesStayFinite) {
  // Past what fp16 scales hold (d saturates at 65504; at 1e15 the float
  // error sums overflow too) and below their resolution (d underflows to
  // zero): outputs are finite either way.
  for (float scale : {1e9f, 1e15f, 1e-30f}) {
    std::vector<float> x = Normal(17, kQK_K);
    for (float& v : x) v *= scale;
    for (TensorType type : kKQuants) {
      const std::vector<float> y = Dequantize(type, Quantize(type, x), x.size());
      for (float v : y) ASSERT_TRUE(std::isfinite(v)) << gguf::TypeName(type) << " scale " << scale;
    }
  }
}

// ---------------------------------------------------------------------------
// Block fields by hand on simple rows. Each sub-block holds a rotation of
// the codes 0..nmax, scaled by round numbers, so the quantizer recovers the
// grid exactly and each field can be written down.

// d = 2^-6, dmin = 2^-7; sub-block j of 32: x = d * sc[j] * q - dmin * m[j]
// with q = (l + step * j) % levels for its l-th value.
constexpr int kSimpleScales[8] = {63, 1, 32, 16, 48, 7, 40, 20};
constexpr int kSimpleMins[8] = {0, 63, 5, 16, 33, 2, 63, 10};
std::vector<float> SimpleScaleMinRow(int step, int levels) {
  std::vector<float> x(kQK_K);
  for (int e = 0; e < kQK_K; ++e) {
    const int j = e / 32, q = (e % 32 + step * j) % levels;
    x[e] = 0x1p-6f * kSimpleScales[j] * q - 0x1p-7f * kSimpleMins[j];
  }
  return x;
}

TEST(QuantizeKTest, Q4_KFieldsOnASimpleRow) {
  // Codes q = (l + 3j) % 16 (SimpleScaleMinRow).
  const std::vector<float> x = SimpleScaleMinRow(3, 16);
  BlockQ4_K b;
  QuantizeRow(TensorType::kQ4_K, x.data(), &b, kQK_K);
  EXPECT_EQ(b.d, 0x2400);     // 2^-6
  EXPECT_EQ(b.dmin, 0x2000);  // 2^-7
  // Bytes 0..3: sc[j] | top two bits of sc[j + 4] << 6; 4..7 the same for m;
  // 8..11: low four bits of sc[j + 4] | those of m[j + 4] << 4.
  const uint8_t scales[12] = {63 | 3 << 6, 1 | 0 << 6,  32 | 2 << 6, 16 | 1 << 6,  //
                              0 | 2 << 6,  63 | 0 << 6, 5 | 3 << 6,  16 | 0 << 6,  //
                              0 | 1 << 4,  7 | 2 << 4,  8 | 15 << 4, 4 | 10 << 4};
  for (int i = 0; i < 12; ++i) EXPECT_EQ(b.scales[i], scales[i]) << "scales[" << i << "]";
  // qs[32c + l]: value 64c + l in the low nibble, 64c + 32 + l in the high.
  EXPECT_EQ(b.qs[0], 0 | 3 << 4);     // sub-blocks 0 and 1, l = 0
  EXPECT_EQ(b.qs[5], 5 | 8 << 4);     // l = 5
  EXPECT_EQ(b.qs[32], 6 | 9 << 4);    // sub-blocks 2 and 3
  EXPECT_EQ(b.qs[127], 1 | 4 << 4);   // sub-blocks 6 ((31 + 18) % 16) and 7 ((31 + 21) % 16), l = 31
  std::vector<float> y(kQK_K);
  DequantizeRow(TensorType::kQ4_K, &b, y.data(), kQK_K);
  EXPECT_EQ(y, x);
}

TEST(QuantizeKTest, Q5_KFieldsOnASimpleRow) {
  // As for Q4_K with codes q = (l + 5j) % 32: the fifth bit goes to qh.
  const std::vector<float> x = SimpleScaleMinRow(5, 32);
  BlockQ5_K b;
  QuantizeRow(TensorType::kQ5_K, x.data(), &b, kQK_K);
  EXPECT_EQ(b.d, 0x2400);
  EXPECT_EQ(b.dmin, 0x2000);
  EXPECT_EQ(b.scales[0], 63 | 3 << 6);
  EXPECT_EQ(b.scales[11], 4 | 10 << 4);
  // l = 0: codes 0, 5, 10, 15, 20, 25, 30, 35 % 32 = 3 for sub-blocks 0..7;
  // bit j of qh[0] is the fifth bit of sub-block j's code: 20, 25, 30 have it.
  EXPECT_EQ(b.qh[0], 1 << 4 | 1 << 5 | 1 << 6);
  EXPECT_EQ(b.qs[0], 0 | 5 << 4);
  EXPECT_EQ(b.qs[96], (30 & 0xF) | 3 << 4);  // sub-blocks 6 and 7
  // l = 31: codes (31 + 5j) % 32 = 31, 4, 9, 14, 19, 24, 29, 2.
  EXPECT_EQ(b.qh[31], 1 << 0 | 1 << 4 | 1 << 5 | 1 << 6);
  std::vector<float> y(kQK_K);
  DequantizeRow(TensorType::kQ5_K, &b, y.data(), kQK_K);
  EXPECT_EQ(y, x);
}

TEST(QuantizeKTest, Q6_KFieldsOnASimpleRow) {
  // Sub-block s (16 values): x = 2^-7 * k[s] * (c - 32) with c = 4 * ((l +
  // r[s]) % 16) for its l-th value (r a shuffle, so that no two sub-blocks
  // sharing bytes have equal nibbles); c = 0 gives each sub-block its extreme,
  // -32 steps. The largest scale is stored as -128: d = -2^-7, scales -k[s],
  // and the codes are c.
  const int r[16] = {0, 5, 3, 9, 14, 2, 7, 11, 1, 6, 12, 4, 8, 15, 10, 13};
  int k[16];
  for (int s = 0; s < 16; ++s) k[s] = 128 - 8 * s;  // 128, 120, ..., 8
  std::vector<float> x(kQK_K);
  for (int e = 0; e < kQK_K; ++e) {
    const int s = e / 16, c = 4 * ((e % 16 + r[s]) % 16);
    x[e] = 0x1p-7f * k[s] * (c - 32);
  }
  BlockQ6_K b;
  QuantizeRow(TensorType::kQ6_K, x.data(), &b, kQK_K);
  EXPECT_EQ(b.d, 0xA000);  // -2^-7
  for (int s = 0; s < 16; ++s) EXPECT_EQ(b.scales[s], -k[s]) << s;
  // Value 128h + 32g + l: low nibble in ql[64h + l (+ 32 for odd g)], high
  // nibble for g >= 2; top two bits at bit 2g of qh[32h + l].
  // h = 0, l = 1: values 1, 33, 65, 97 are place 1 of sub-blocks 0, 2, 4, 6:
  // codes 4 * 1, 4 * 4, 4 * 15, 4 * 8 = 4, 16, 60, 32.
  EXPECT_EQ(b.ql[1], 4 | (60 & 0xF) << 4);
  EXPECT_EQ(b.ql[33], (16 & 0xF) | (32 & 0xF) << 4);
  EXPECT_EQ(b.qh[1], 0 << 0 | 1 << 2 | 3 << 4 | 2 << 6);
  // h = 1, l = 17: values 145, 177, 209, 241 are place 1 of sub-blocks 9, 11,
  // 13, 15: codes 4 * 7, 4 * 5, 4 * 0, 4 * 14 = 28, 20, 0, 56.
  EXPECT_EQ(b.ql[64 + 17], (28 & 0xF) | 0 << 4);
  EXPECT_EQ(b.ql[96 + 17], (20 & 0xF) | (56 & 0xF) << 4);
  EXPECT_EQ(b.qh[32 + 17], 1 << 0 | 1 << 2 | 0 << 4 | 3 << 6);
  std::vector<float> y(kQK_K);
  DequantizeRow(TensorType::kQ6_K, &b, y.data(), kQK_K);
  EXPECT_EQ(y, x);
}

}  // namespace
}  // namespace micromoe::kernels
