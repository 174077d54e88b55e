#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/kernel_set.h"
#include "kernels/quant.h"

namespace micromoe::kernels {
namespace {

// ---------------------------------------------------------------------------
// K-quants. Each 256-value super-block is encoded on its own (a block's bytes
// depend only on its 256 inputs). The search objective everywhere is a
// squared error weighted by rms + |x| (rms over the sub-block), as the
// reference Q4_K / Q5_K quantizers of GGUF engines weight it: it leans
// towards large magnitudes, which matter most to the products; on random
// normal rows it costs under 1% in RMSE against plain least squares and cuts
// the largest error by a fifth (Q4_K) to a third (Q5_K). Q6_K takes the same
// weights (the reference weights by x^2 there; on normal rows rms + |x| gives
// 2% less RMSE at the same largest error).

// Rounds to nearest (ties to even) and clamps to [lo, hi]; NaN gives lo.
// |lo|, |hi| < 2^22: adding 1.5 * 2^23 leaves the rounded integer in the low
// mantissa bits (no libm call on the hot path).
int RoundClamp(float v, int lo, int hi) {
  if (!(v > static_cast<float>(lo))) return lo;
  if (!(v < static_cast<float>(hi))) return hi;
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  return (bits & 0x007FFFFF) - 0x00400000;
}

// Stores v as fp16, saturating to the largest finite half rather than
// overflowing to infinity; returns the value the dequantizers will read.
float StoreHalf(float v, uint16_t* field) {
  constexpr float kMaxHalf = 65504.0f;
  *field = Fp32ToFp16(std::clamp(v, -kMaxHalf, kMaxHalf));
  return Fp16ToFp32(*field);
}

// x ~ scale * q - offset with q in [0, nmax]: the grid of a Q4_K / Q5_K
// sub-block. scale >= 0 and offset >= 0 (the format's 6-bit mins are unsigned
// and subtracted, so the grid always reaches down to zero or below).
struct AffineFit {
  float scale = 0, offset = 0;
};

// Codes of x on the grid (scale, offset), nearest within [0, nmax].
void AffineCodes(const float* x, int n, int nmax, float scale, float offset, uint8_t* q) {
  const float inv = scale > 0 ? 1.0f / scale : 0.0f;
  for (int i = 0; i < n; ++i) q[i] = static_cast<uint8_t>(scale > 0 ? RoundClamp((x[i] + offset) * inv, 0, nmax) : 0);
}

// Weighted squared error of codes q on (scale, offset), evaluated as the
// dequantizers evaluate the grid.
float AffineError(const float* x, const float* w, int n, float scale, float offset, const uint8_t* q) {
  float err = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = scale * q[i] - offset - x[i];
    err += w[i] * diff * diff;
  }
  return err;
}

// Weighted least-squares scale and offset for fixed codes, the offset kept
// >= 0. False when the codes do not determine a scale (all equal) or the best
// scale would be negative.
bool SolveAffine(const float* x, const float* w, const uint8_t* q, int n, AffineFit* fit) {
  float sw = 0, swx = 0, swl = 0, swl2 = 0, swxl = 0;
  for (int i = 0; i < n; ++i) {
    const float l = q[i];
    sw += w[i];
    swx += w[i] * x[i];
    swl += w[i] * l;
    swl2 += w[i] * l * l;
    swxl += w[i] * x[i] * l;
  }
  const float det = sw * swl2 - swl * swl;
  if (!(det > 0)) return false;
  float scale = (sw * swxl - swx * swl) / det;
  float zero = (swl2 * swx - swl * swxl) / det;  // value of code 0, = -offset
  if (zero > 0) {  // the offset cannot be negative: fit the scale alone through 0
    zero = 0;
    scale = swxl / swl2;
  }
  if (!(scale >= 0) || !std::isfinite(scale) || !std::isfinite(zero)) return false;
  fit->scale = scale;
  fit->offset = -zero;
  return true;
}

// Best (scale, offset) for one sub-block: starting from the grid spanning
// [min(x, 0), max(x)], tries grids whose span holds nmax + rmin + k * rdelta
// steps (k = 0..nstep; a slightly finer grid clamps a lone extreme to gain
// precision everywhere else), refits scale and offset by least squares on each
// candidate's codes, then alternates re-rounding and refitting from the best
// one while the error falls. Codes of the result in q. n <= 32.
AffineFit FitAffine(const float* x, const float* w, int n, int nmax, float rmin, float rdelta, int nstep,
                    uint8_t* q) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  lo = std::min(lo, 0.0f);
  AffineFit best;
  if (!(hi > lo)) {  // constant (zero or negative) values: the offset alone holds them
    best.offset = -lo;
    std::fill_n(q, n, uint8_t{0});
    return best;
  }
  best.scale = (hi - lo) / nmax;
  best.offset = -lo;
  AffineCodes(x, n, nmax, best.scale, best.offset, q);
  float best_err = AffineError(x, w, n, best.scale, best.offset, q);
  uint8_t cand[32];
  for (int k = 0; k <= nstep; ++k) {
    const float steps = nmax + rmin + rdelta * k;
    AffineCodes(x, n, nmax, (hi - lo) / steps, -lo, cand);
    AffineFit fit;
    if (!SolveAffine(x, w, cand, n, &fit)) continue;
    const float err = AffineError(x, w, n, fit.scale, fit.offset, cand);
    if (err < best_err) {
      best_err = err;
      best = fit;
      std::copy_n(cand, n, q);
    }
  }
  for (int iter = 0; iter < 4; ++iter) {  // Lloyd-style: codes for the fit, fit for the codes
    AffineCodes(x, n, nmax, best.scale, best.offset, cand);
    AffineFit fit;
    if (!SolveAffine(x, w, cand, n, &fit)) break;
    const float err = AffineError(x, w, n, fit.scale, fit.offset, cand);
    if (!(err < best_err)) break;
    best_err = err;
    best = fit;
    std::copy_n(cand, n, q);
  }
  return best;
}

// The 12-byte form of eight 6-bit scales and mins (the inverse of the
// dequantizers' GetScaleMinK4): bytes 0..3 scale j and the top two bits of
// scale j+4; bytes 4..7 the same for the mins; bytes 8..11 the low four bits
// of scale j+4 (low nibble) and min j+4 (high nibble).
void PackScalesK4(const uint8_t sc[8], const uint8_t mn[8], uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
}

// Q4_K (nmax 15) and Q5_K (nmax 31) share everything but the code width: per
// 32 values a fitted (scale, offset), stored as 6-bit multiples of the
// super-block's fp16 d and dmin. The 6-bit values are chosen against the
// stored (rounded) d and dmin, trying the neighbours of the rounded ratio and
// keeping the pair whose re-rounded codes give the least error.
void QuantizeAffineSuperBlock(const float* x, int nmax, uint16_t* d_field, uint16_t* dmin_field,
                              uint8_t scales[12], uint8_t codes[kQK_K]) {
  constexpr int kSub = 32;
  AffineFit fits[8];
  float weights[kQK_K];
  float max_scale = 0, max_offset = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + kSub * j;
    float* w = weights + kSub * j;
    float sum2 = 0;
    for (int i = 0; i < kSub; ++i) sum2 += xs[i] * xs[i];
    const float rms = std::sqrt(sum2 / kSub);
    for (int i = 0; i < kSub; ++i) w[i] = rms + std::fabs(xs[i]);
    fits[j] = FitAffine(xs, w, kSub, nmax, -1.0f, 0.1f, 20, codes + kSub * j);  // nmax - 1 .. nmax + 1 steps
    max_scale = std::max(max_scale, fits[j].scale);
    max_offset = std::max(max_offset, fits[j].offset);
  }
  const float d = StoreHalf(max_scale / 63, d_field);
  const float dmin = StoreHalf(max_offset / 63, dmin_field);
  uint8_t sc[8], mn[8];
  uint8_t cand[kSub];
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + kSub * j;
    const float* w = weights + kSub * j;
    const int ls0 = d > 0 ? RoundClamp(fits[j].scale / d, 0, 63) : 0;
    const int lm0 = dmin > 0 ? RoundClamp(fits[j].offset / dmin, 0, 63) : 0;
    sc[j] = static_cast<uint8_t>(ls0);  // kept should every error overflow (magnitudes near 1e13)
    mn[j] = static_cast<uint8_t>(lm0);
    AffineCodes(xs, kSub, nmax, d * ls0, dmin * lm0, codes + kSub * j);
    float best_err = std::numeric_limits<float>::infinity();
    for (int ls : {ls0, ls0 - 1, ls0 + 1}) {  // the rounded ratios first: a tie keeps them
      if (ls < 0 || ls > 63) continue;
      const float step = d * ls;  // as the dequantizers form it
      // Besides the neighbours of the rounded offset, the least-squares offset
      // for this step: a step rounded far from the fit (down to 0 next to a
      // much larger sub-block) wants an offset of its own.
      AffineCodes(xs, kSub, nmax, step, dmin * lm0, cand);
      float sw = 0, swr = 0;
      for (int i = 0; i < kSub; ++i) {
        sw += w[i];
        swr += w[i] * (step * cand[i] - xs[i]);
      }
      const int lm_fit = dmin > 0 ? RoundClamp(swr / sw / dmin, 0, 63) : 0;
      for (int lm : {lm0, lm0 - 1, lm0 + 1, lm_fit}) {
        if (lm < 0 || lm > 63) continue;
        const float offset = dmin * lm;
        AffineCodes(xs, kSub, nmax, step, offset, cand);
        const float err = AffineError(xs, w, kSub, step, offset, cand);
        if (err < best_err) {
          best_err = err;
          sc[j] = static_cast<uint8_t>(ls);
          mn[j] = static_cast<uint8_t>(lm);
          std::copy_n(cand, kSub, codes + kSub * j);
        }
      }
    }
  }
  PackScalesK4(sc, mn, scales);
}

void QuantizeQ4_K(const float* x, BlockQ4_K* b, int64_t n) {
  uint8_t q[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    QuantizeAffineSuperBlock(x, 15, &b[i].d, &b[i].dmin, b[i].scales, q);
    // Each 64 values share 32 bytes: the first 32 in the low nibbles.
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) b[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
  }
}

void QuantizeQ5_K(const float* x, BlockQ5_K* b, int64_t n) {
  uint8_t q[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    QuantizeAffineSuperBlock(x, 31, &b[i].d, &b[i].dmin, b[i].scales, q);
    // Low four bits as in Q4_K; the fifth bit of value 64c + l (+ 32) is bit
    // 2c (2c + 1) of qh[l].
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        b[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

// Q6_K: per 16 values a signed scale s with x ~ s * q, q in [-32, 31]. The
// candidate inverse scales map the signed extreme to -(32 + k/10) steps
// (k = -9..9), so the wider side of the code range takes it; each candidate's
// scale is the weighted least-squares one for its codes, and the best is
// refined by re-rounding while the error falls. Returns the scale.
float FitSymmetric(const float* x, const float* w, int n, int8_t* q) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  std::fill_n(q, n, int8_t{0});
  if (!(amax > 0)) return 0;
  // Minimising the error over the scale for fixed codes leaves
  // sum(w x^2) - (sum w x l)^2 / sum w l^2, so the best codes maximise the ratio.
  float best_scale = 0, best_gain = -1;
  int8_t cand[32];
  auto try_codes = [&](float inv) {
    float swxl = 0, swl2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = RoundClamp(inv * x[i], -32, 31);
      cand[i] = static_cast<int8_t>(l);
      swxl += w[i] * x[i] * l;
      swl2 += w[i] * l * l;
    }
    if (!(swl2 > 0)) return false;
    const float gain = swxl * swxl / swl2;
    if (!(gain > best_gain)) return false;
    best_gain = gain;
    best_scale = swxl / swl2;
    std::copy_n(cand, n, q);
    return true;
  };
  try_codes(-32.0f / max);
  for (int k = -9; k <= 9; ++k) {
    if (k != 0) try_codes(-(32.0f + 0.1f * k) / max);
  }
  for (int iter = 0; iter < 4 && best_scale != 0; ++iter) {
    if (!try_codes(1.0f / best_scale)) break;
  }
  return best_scale;
}

void QuantizeQ6_K(const float* x, BlockQ6_K* b, int64_t n) {
  constexpr int kSub = 16;
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    int8_t q[kQK_K];
    float weights[kQK_K];
    float scales[kQK_K / kSub];
    float max_scale = 0;  // the signed scale of largest magnitude
    for (int j = 0; j < kQK_K / kSub; ++j) {
      const float* xs = x + kSub * j;
      float sum2 = 0;
      for (int l = 0; l < kSub; ++l) sum2 += xs[l] * xs[l];
      const float rms = std::sqrt(sum2 / kSub);
      for (int l = 0; l < kSub; ++l) weights[kSub * j + l] = rms + std::fabs(xs[l]);
      scales[j] = FitSymmetric(x + kSub * j, weights + kSub * j, kSub, q + kSub * j);
      if (std::fabs(scales[j]) > std::fabs(max_scale)) max_scale = scales[j];
    }
    // The largest scale becomes -128 times d: int8 has one more step on that side.
    const float d = StoreHalf(max_scale != 0 ? -max_scale / 128 : 0.0f, &b[i].d);
    int8_t cand[kSub];
    for (int j = 0; j < kQK_K / kSub; ++j) {
      const float* xs = x + kSub * j;
      const float* w = weights + kSub * j;
      const int s0 = d != 0 ? RoundClamp(scales[j] / d, -128, 127) : 0;
      b[i].scales[j] = static_cast<int8_t>(s0);  // kept should every error overflow
      float best_err = std::numeric_limits<float>::infinity();
      for (int s : {s0, s0 - 1, s0 + 1}) {  // the rounded ratio first: a tie keeps it
        if (s < -128 || s > 127) continue;
        const float step = d * s;  // as the dequantizer forms it
        const float inv = step != 0 ? 1.0f / step : 0.0f;
        float err = 0;
        for (int l = 0; l < kSub; ++l) {
          cand[l] = static_cast<int8_t>(step != 0 ? RoundClamp(xs[l] * inv, -32, 31) : 0);
          const float diff = step * cand[l] - xs[l];
          err += w[l] * diff * diff;
        }
        if (err < best_err) {
          best_err = err;
          b[i].scales[j] = static_cast<int8_t>(s);
          std::copy_n(cand, kSub, q + kSub * j);
        }
      }
    }
    // Value 128h + 32g + l: low four bits in ql[64h + l + 32 (g odd)], low
    // nibble for g < 2, high for g >= 2; top two bits at bit 2g of qh[32h + l].
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 32; ++l) {
        int u[4];
        for (int g = 0; g < 4; ++g) u[g] = q[128 * h + 32 * g + l] + 32;
        b[i].ql[64 * h + l] = static_cast<uint8_t>((u[0] & 0xF) | ((u[2] & 0xF) << 4));
        b[i].ql[64 * h + 32 + l] = static_cast<uint8_t>((u[1] & 0xF) | ((u[3] & 0xF) << 4));
        b[i].qh[32 * h + l] =
            static_cast<uint8_t>((u[0] >> 4) | ((u[1] >> 4) << 2) | ((u[2] >> 4) << 4) | ((u[3] >> 4) << 6));
      }
    }
  }
}

// Q4_0 / Q5_0: the value of largest magnitude keeps its sign as -8 / -16
// steps of d; q = nearest(x / d) + 8 / 16, clamped to 15 / 31.
template <class Block>
void QuantizeSymmetric(const float* src, Block* b, int64_t n) {
  constexpr bool kFifthBit = std::is_same_v<Block, BlockQ5_0>;
  constexpr int kHalf = kFifthBit ? 16 : 8;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* x = src + i * kQK;
    float amax = 0, max = 0;  // max keeps the sign of the largest magnitude
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -kHalf;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = Fp32ToFp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(2 * kHalf - 1, static_cast<int>(x[j] * id + (kHalf + 0.5f)));
      const int hi = std::min(2 * kHalf - 1, static_cast<int>(x[j + kQK / 2] * id + (kHalf + 0.5f)));
      b[i].qs[j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      qh |= static_cast<uint32_t>(lo >> 4) << j | static_cast<uint32_t>(hi >> 4) << (j + kQK / 2);
    }
    if constexpr (kFifthBit) std::memcpy(b[i].qh, &qh, 4);
  }
}

// Q4_1 / Q5_1: the block's range [min, max] in 15 / 31 steps of d from m = min;
// q = nearest((x - min) / d).
template <class Block>
void QuantizeWithOffset(const float* src, Block* b, int64_t n) {
  constexpr bool kFifthBit = std::is_same_v<Block, BlockQ5_1>;
  constexpr int kTop = kFifthBit ? 31 : 15;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* x = src + i * kQK;
    float min = x[0], max = x[0];
    for (int j = 1; j < kQK; ++j) {
      min = std::min(min, x[j]);
      max = std::max(max, x[j]);
    }
    const float d = (max - min) / kTop;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = Fp32ToFp16(d);
    b[i].m = Fp32ToFp16(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(kTop, static_cast<int>((x[j] - min) * id + 0.5f));
      const int hi = std::min(kTop, static_cast<int>((x[j + kQK / 2] - min) * id + 0.5f));
      b[i].qs[j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      qh |= static_cast<uint32_t>(lo >> 4) << j | static_cast<uint32_t>(hi >> 4) << (j + kQK / 2);
    }
    if constexpr (kFifthBit) std::memcpy(b[i].qh, &qh, 4);
  }
}

}  // namespace

using gguf::TensorType;

bool CanQuantizeTo(TensorType type) {
  switch (type) {
    case TensorType::kF32: case TensorType::kF16: case TensorType::kBF16:
    case TensorType::kQ8_0: case TensorType::kQ4_0:
    case TensorType::kQ4_1: case TensorType::kQ5_0: case TensorType::kQ5_1:
    case TensorType::kQ4_K: case TensorType::kQ5_K: case TensorType::kQ6_K:
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
    case TensorType::kQ4_0:
      QuantizeSymmetric(src, static_cast<BlockQ4_0*>(dst), n);
      break;
    case TensorType::kQ5_0:
      QuantizeSymmetric(src, static_cast<BlockQ5_0*>(dst), n);
      break;
    case TensorType::kQ4_1:
      QuantizeWithOffset(src, static_cast<BlockQ4_1*>(dst), n);
      break;
    case TensorType::kQ5_1:
      QuantizeWithOffset(src, static_cast<BlockQ5_1*>(dst), n);
      break;
    case TensorType::kQ4_K:
      QuantizeQ4_K(src, static_cast<BlockQ4_K*>(dst), n);
      break;
    case TensorType::kQ5_K:
      QuantizeQ5_K(src, static_cast<BlockQ5_K*>(dst), n);
      break;
    case TensorType::kQ6_K:
      QuantizeQ6_K(src, static_cast<BlockQ6_K*>(dst), n);
      break;
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
