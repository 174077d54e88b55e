// Scalar reference kernels: the definition every vector back-end is tested against.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/dot_rows.h"
#include "kernels/kernel_set.h"
#include "kernels/packed.h"
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

// Q4_0 and IQ4_NL (one block layout) against Q8_0: nibble q stands for kValue(q).
int Q4_0Value(int q) { return q - 8; }
int IQ4_NLValue(int q) { return kIQ4NLValues[q]; }

// The integer dot of 32 nibbles (element j low in qs[j], j + 16 high) with 32 codes.
template <int (*kValue)(int)>
int32_t NibbleDot(const uint8_t* qs, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    s += kValue(qs[j] & 0x0F) * x[j];
    s += kValue(qs[j] >> 4) * x[j + kQK / 2];
  }
  return s;
}

template <int (*kValue)(int)>
float DotNibblesQ8_0(const void* w, const void* x, int64_t n) {
  const BlockQ4_0* a = static_cast<const BlockQ4_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK; ++i) {
    sum += NibbleDot<kValue>(a[i].qs, b[i].qs) * Fp16ToFp32(a[i].d) * Fp16ToFp32(b[i].d);
  }
  return sum;
}
constexpr auto DotQ4_0Q8_0 = DotNibblesQ8_0<Q4_0Value>;

void Dot4Q8_0Q8_0(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  for (int i = 0; i < 4; ++i) out[i] = DotQ8_0Q8_0(w, static_cast<const uint8_t*>(x) + i * x_stride, n);
}

void Dot4Q4_0Q8_0(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  for (int i = 0; i < 4; ++i) out[i] = DotQ4_0Q8_0(w, static_cast<const uint8_t*>(x) + i * x_stride, n);
}

void QuantizeQ8_K(const float* src, void* dst, int64_t n) {
  BlockQ8_K* b = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float* x = src + i * kQK_K;
    float amax = 0, max = 0;  // max keeps the sign of the first largest magnitude
    for (int j = 0; j < kQK_K; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    if (amax == 0) {
      b[i] = BlockQ8_K{};
      continue;
    }
    const float iscale = -127.0f / max;
    b[i].d = 1 / iscale;
    for (int j = 0; j < kQK_K; ++j) {
      b[i].qs[j] = static_cast<int8_t>(std::min(127, static_cast<int>(std::nearbyint(iscale * x[j]))));
    }
    for (int k = 0; k < kQK_K / 16; ++k) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += b[i].qs[16 * k + j];
      b[i].bsums[k] = static_cast<int16_t>(sum);
    }
  }
}

// Q4_K / Q5_K: 8 sub-blocks of 32, value d * scale_j * q - dmin * min_j.
// Scale and min of sub-block j are 6 bits each in the 12 scale bytes: for
// j < 4 the low 6 bits of bytes j and j + 4; for j >= 4 the low and high
// nibble of byte j + 4, topped with the spare top 2 bits of bytes j - 4 and j.
void ScaleMinK4(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Integer sums per sub-block; the scales apply to the sub-block sums and the
// mins to the activation sums, then one float step per super-block. Sub-block
// j's quants: the low 4 bits of element l (0..31) are in qs[32 (j / 2) + l],
// low nibble for even j, high nibble for odd j; Q5_K's fifth bit is bit j of
// qh[l].
template <typename Block>
float DotK4Q8_K(const void* w, const void* x, int64_t n) {
  const Block* a = static_cast<const Block*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int32_t scaled = 0, mins = 0;
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      ScaleMinK4(a[i].scales, j, &scale, &min);
      const uint8_t* qs = a[i].qs + 32 * (j / 2);
      const int8_t* xq = b[i].qs + 32 * j;
      int32_t qx = 0, xs = 0;
      for (int l = 0; l < 32; ++l) {
        int q = (qs[l] >> (4 * (j % 2))) & 0x0F;
        if constexpr (std::is_same_v<Block, BlockQ5_K>) q |= ((a[i].qh[l] >> j) & 1) << 4;
        qx += q * xq[l];
        xs += xq[l];
      }
      scaled += scale * qx;
      mins += min * xs;
    }
    sum += b[i].d * (Fp16ToFp32(a[i].d) * static_cast<float>(scaled) - Fp16ToFp32(a[i].dmin) * static_cast<float>(mins));
  }
  return sum;
}

float DotQ4_KQ8_K(const void* w, const void* x, int64_t n) { return DotK4Q8_K<BlockQ4_K>(w, x, n); }
float DotQ5_KQ8_K(const void* w, const void* x, int64_t n) { return DotK4Q8_K<BlockQ5_K>(w, x, n); }

// Q6_K: 16 sub-blocks of 16, value d * scales[e / 16] * (q - 32). Element e =
// 128h + 32g + l (half h, quarter g = 0..3, l = 0..31) has its low 4 bits in
// ql[64h + 32 (g odd) + l], low nibble for g < 2, high for g >= 2, and its
// high 2 bits at bits 2g, 2g + 1 of qh[32h + l].
float DotQ6_KQ8_K(const void* w, const void* x, int64_t n) {
  const BlockQ6_K* a = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int32_t scaled = 0;
    for (int h = 0; h < 2; ++h) {
      for (int g = 0; g < 4; ++g) {
        const uint8_t* ql = a[i].ql + 64 * h + 32 * (g % 2);
        const uint8_t* qh = a[i].qh + 32 * h;
        const int8_t* xq = b[i].qs + 128 * h + 32 * g;
        for (int half = 0; half < 2; ++half) {  // sub-block 8h + 2g + half: l in [16 half, 16 half + 16)
          int32_t qx = 0;
          for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const int low = (ql[l] >> (4 * (g / 2))) & 0x0F;
            const int high = (qh[l] >> (2 * g)) & 3;
            qx += ((low | (high << 4)) - 32) * xq[l];
          }
          scaled += a[i].scales[8 * h + 2 * g + half] * qx;
        }
      }
    }
    sum += b[i].d * Fp16ToFp32(a[i].d) * static_cast<float>(scaled);
  }
  return sum;
}

// Q2_K / Q3_K against Q8_K (quant.h): per sub-block s, the integer dot of its
// quants with the codes times its scale; Q2_K's mins from the bsums.
template <class Block>
float DotLowKQ8_K(const void* w, const void* x, int64_t n) {
  constexpr bool kQ2 = std::is_same_v<Block, BlockQ2_K>;
  const Block* a = static_cast<const Block*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int32_t scaled = 0, mins = 0;
    for (int s = 0; s < kQK_K / 16; ++s) {
      int32_t qx = 0;
      for (int e = 16 * s; e < 16 * s + 16; ++e) qx += LowKQuant(a[i], e) * b[i].qs[e];
      if constexpr (kQ2) {
        scaled += (a[i].scales[s] & 0x0F) * qx;
        mins += (a[i].scales[s] >> 4) * b[i].bsums[s];
      } else {
        scaled += Q3_KScale(a[i], s) * qx;
      }
    }
    // One term per super-block, so that a row's sum and the sum of its
    // super-blocks' dots (the packed reference) round alike.
    float term = b[i].d * Fp16ToFp32(a[i].d) * static_cast<float>(scaled);
    if constexpr (kQ2) term -= b[i].d * Fp16ToFp32(a[i].dmin) * static_cast<float>(mins);
    sum += term;
  }
  return sum;
}

float DotIQ4_XSQ8_K(const void* w, const void* x, int64_t n) {
  const BlockIQ4_XS* a = static_cast<const BlockIQ4_XS*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int32_t scaled = 0;
    for (int sub = 0; sub < kQK_K / 32; ++sub) {
      scaled += IQ4_XSScale(a[i], sub) * NibbleDot<IQ4_NLValue>(a[i].qs + 16 * sub, b[i].qs + 32 * sub);
    }
    sum += b[i].d * Fp16ToFp32(a[i].d) * static_cast<float>(scaled);
  }
  return sum;
}

template <float (*kDot)(const void*, const void*, int64_t)>
void Dot4(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out) {
  for (int i = 0; i < 4; ++i) out[i] = kDot(w, static_cast<const uint8_t*>(x) + i * x_stride, n);
}

// The packed layout read element by element (packed.h), with the same
// per-block arithmetic as the unpacked dot products above.
// Packed Q8_0, Q4_0 and IQ4_NL (kQ4: nibbles, whose values kValue gives).
template <bool kQ4, int (*kValue)(int) = Q4_0Value>
void GemmX16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* /*terms*/,
             uint64_t /*terms_stride*/, int n_x, float* out) {
  const int chunk_bytes = (kQ4 ? 4 : 8) * 64;
  auto scale = [&](int64_t b, int row) {
    uint16_t d;
    std::memcpy(&d, group + PackedScalesOffset(b, chunk_bytes) + 2 * row, 2);
    return Fp16ToFp32(d);
  };
  auto weight = [&](int64_t b, int row, int e) {
    const uint8_t* q = group + PackedQuantsOffset(b, chunk_bytes);
    if (!kQ4) return static_cast<int>(q[(e / 4) * 64 + row * 4 + e % 4]) - 128;
    const int j = e % 16;  // the nibble byte holding element e
    const uint8_t v = q[(j / 4) * 64 + row * 4 + j % 4];
    return kValue(e < 16 ? (v & 0x0F) : (v >> 4));
  };
  for (int r = 0; r < n_x; ++r) {
    const BlockQ8_0* x = reinterpret_cast<const BlockQ8_0*>(xq + r * xq_stride);
    for (int row = 0; row < 16; ++row) {
      float sum = 0;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t s = 0;
        for (int e = 0; e < kQK; ++e) s += weight(b, row, e) * x[b].qs[e];
        sum += s * scale(b, row) * Fp16ToFp32(x[b].d);
      }
      out[r * 16 + row] = sum;
    }
  }
}

// Packed Q5_0 read element by element, summed as DotLegacyQ8_0 sums the file
// layout: per block (sum(q x) - 16 sum(x)) d_w d_x.
void GemmQ5_0X16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* /*terms*/,
                 uint64_t /*terms_stride*/, int n_x, float* out) {
  constexpr int kChunkBytes = 5 * 64;
  for (int r = 0; r < n_x; ++r) {
    const BlockQ8_0* x = reinterpret_cast<const BlockQ8_0*>(xq + r * xq_stride);
    for (int row = 0; row < 16; ++row) {
      float sum = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* q = group + PackedQuantsOffset(b, kChunkBytes);
        int32_t s = 0, sx = 0;
        for (int e = 0; e < kQK; ++e) {
          const int j = e % 16;  // the nibble byte holding element e
          const uint8_t v = q[(j / 4) * 64 + row * 4 + j % 4];
          const int fifth = (q[256 + row * 4 + e % 4] >> (e / 4)) & 1;
          s += ((e < 16 ? v & 0x0F : v >> 4) | fifth << 4) * x[b].qs[e];
          sx += x[b].qs[e];
        }
        uint16_t d;
        std::memcpy(&d, group + PackedScalesOffset(b, kChunkBytes) + 2 * row, 2);
        sum += (s - 16 * sx) * Fp16ToFp32(d) * Fp16ToFp32(x[b].d);
      }
      out[r * 16 + row] = sum;
    }
  }
}

// Packed K-quants: each block gathered back from the packed layout, then the
// file layout's dot product, one super-block at a time (so the float sums
// run in the same order as over a whole row).
template <gguf::TensorType kType, class Block, float (*kDot)(const void*, const void*, int64_t)>
void GemmKQuantX16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* /*terms*/,
                   uint64_t /*terms_stride*/, int n_x, float* out) {
  for (int i = 0; i < 16; ++i) {
    float sums[kMaxPackedTileRows] = {};
    for (int64_t s = 0; s < nb; ++s) {
      Block block;
      UnpackKQuantBlock(kType, group, nb, s, i, &block);
      for (int r = 0; r < n_x; ++r) sums[r] += kDot(&block, xq + r * xq_stride + s * sizeof(BlockQ8_K), kQK_K);
    }
    for (int r = 0; r < n_x; ++r) out[r * 16 + i] = sums[r];
  }
}

// Packed BF16 / F16 read element by element, summed in double in column
// order as DotBf16F32 / DotF16F32 and GemmF32X16 sum the same products.
// Activations: BF16 codes for BF16 weights, floats for F16 weights.
template <bool kBf16>
void GemmHalfX16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* /*terms*/,
                 uint64_t /*terms_stride*/, int n_x, float* out) {
  auto weight = [](const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return kBf16 ? Bf16ToFp32(h) : Fp16ToFp32(h);
  };
  auto activation = [&](const uint8_t* x, int64_t c) {
    if constexpr (kBf16) return weight(x + 2 * c);  // BF16 codes, decoded as the weights are
    float f;
    std::memcpy(&f, x + 4 * c, 4);
    return f;
  };
  for (int r = 0; r < n_x; ++r) {
    const uint8_t* x = xq + r * xq_stride;
    for (int row = 0; row < 16; ++row) {
      double sum = 0;
      for (int64_t c = 0; c < nb * kQK; ++c) {
        sum += static_cast<double>(weight(group + (c / 2) * 64 + row * 4 + (c % 2) * 2)) * activation(x, c);
      }
      out[r * 16 + row] = static_cast<float>(sum);
    }
  }
}

void GemmF32X16(const float* wt, int64_t cols, const float* x, int64_t ldx, int n_x, float* out) {
  for (int r = 0; r < n_x; ++r) {
    for (int i = 0; i < 16; ++i) {
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += static_cast<double>(wt[c * 16 + i]) * x[r * ldx + c];
      out[r * 16 + i] = static_cast<float>(sum);
    }
  }
}

void SoftmaxF32(float* s, int64_t n, float scale) {
  float mx = -INFINITY;
  for (int64_t t = 0; t < n; ++t) mx = std::max(mx, s[t] *= scale);
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) sum += s[t] = std::exp(s[t] - mx);
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t t = 0; t < n; ++t) s[t] *= inv;
}

void SwiGluF32(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void WeightedRowsF32(const float* w, uint64_t ld_w, int n_q, const float* rows, uint64_t stride, int64_t n,
                     int64_t dim, float* out, uint64_t ld_out) {
  for (int h = 0; h < n_q; ++h) {
    for (int64_t i = 0; i < dim; ++i) {
      double sum = 0;
      for (int64_t t = 0; t < n; ++t) sum += static_cast<double>(w[h * ld_w + t]) * rows[t * stride + i];
      out[h * ld_out + i] = static_cast<float>(sum);
    }
  }
}

// Q4_1 / Q5_0 / Q5_1 against Q8_0: per block, d_w d_x sum(q x) plus the
// offset's share, m d_x sum(x) (Q5_0: -16 d_w d_x sum(x)).
template <class Block>
float DotLegacyQ8_0(const void* w, const void* x, int64_t n) {
  const Block* a = static_cast<const Block*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(x);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int32_t s = 0, sx = 0;
    for (int j = 0; j < kQK; ++j) {
      s += StoredQuant(a[i], j) * b[i].qs[j];
      sx += b[i].qs[j];
    }
    const float dx = Fp16ToFp32(b[i].d);
    if constexpr (std::is_same_v<Block, BlockQ5_0>) {
      sum += (s - 16 * sx) * Fp16ToFp32(a[i].d) * dx;
    } else {
      sum += s * Fp16ToFp32(a[i].d) * dx + sx * Fp16ToFp32(a[i].m) * dx;
    }
  }
  return sum;
}

}  // namespace

const KernelSet& ScalarKernels() {
  static const KernelSet set = [] {
    KernelSet s = {"scalar", DotF32, DotF16F32, DotBf16F32, AxpyF32, F16ToF32, Bf16ToF32, Q8_0ToF32, Q4_0ToF32,
                   QuantizeQ8_0, DotQ8_0Q8_0, DotQ4_0Q8_0, Dot4Q8_0Q8_0, Dot4Q4_0Q8_0,
                   QuantizeQ8_K, DotQ4_KQ8_K, DotQ5_KQ8_K, DotQ6_KQ8_K, Dot4<DotQ4_KQ8_K>,
                   Dot4<DotQ5_KQ8_K>, Dot4<DotQ6_KQ8_K>, GemmX16<false>, GemmX16<true>,
                   GemmF32X16, DotRowsEach<DotF32>, WeightedRowsF32, SoftmaxF32, SwiGluF32};
    s.gemm_bf16_x16 = GemmHalfX16<true>;
    s.gemm_f16_x16 = GemmHalfX16<false>;
    s.gemm_q4_K_x16 = GemmKQuantX16<gguf::TensorType::kQ4_K, BlockQ4_K, DotQ4_KQ8_K>;
    s.gemm_q5_K_x16 = GemmKQuantX16<gguf::TensorType::kQ5_K, BlockQ5_K, DotQ5_KQ8_K>;
    s.gemm_q6_K_x16 = GemmKQuantX16<gguf::TensorType::kQ6_K, BlockQ6_K, DotQ6_KQ8_K>;
    s.gemm_iq4_xs_x16 = GemmKQuantX16<gguf::TensorType::kIQ4_XS, BlockIQ4_XS, DotIQ4_XSQ8_K>;
    s.gemm_q3_K_x16 = GemmKQuantX16<gguf::TensorType::kQ3_K, BlockQ3_K, DotLowKQ8_K<BlockQ3_K>>;
    s.gemm_q2_K_x16 = GemmKQuantX16<gguf::TensorType::kQ2_K, BlockQ2_K, DotLowKQ8_K<BlockQ2_K>>;
    s.gemm_q5_0_x16 = GemmQ5_0X16;
    s.gemm_iq4_nl_x16 = GemmX16<true, IQ4_NLValue>;
    s.dot_q4_1_q8_0 = DotLegacyQ8_0<BlockQ4_1>;
    s.dot_q5_0_q8_0 = DotLegacyQ8_0<BlockQ5_0>;
    s.dot_q5_1_q8_0 = DotLegacyQ8_0<BlockQ5_1>;
    s.dot4_q4_1_q8_0 = Dot4<DotLegacyQ8_0<BlockQ4_1>>;
    s.dot4_q5_0_q8_0 = Dot4<DotLegacyQ8_0<BlockQ5_0>>;
    s.dot4_q5_1_q8_0 = Dot4<DotLegacyQ8_0<BlockQ5_1>>;
    s.dot_iq4_nl_q8_0 = DotNibblesQ8_0<IQ4_NLValue>;
    s.dot_q2_K_q8_K = DotLowKQ8_K<BlockQ2_K>;
    s.dot_q3_K_q8_K = DotLowKQ8_K<BlockQ3_K>;
    s.dot4_iq4_nl_q8_0 = Dot4<DotNibblesQ8_0<IQ4_NLValue>>;
    s.dot4_q2_K_q8_K = Dot4<DotLowKQ8_K<BlockQ2_K>>;
    s.dot4_q3_K_q8_K = Dot4<DotLowKQ8_K<BlockQ3_K>>;
    s.dot_iq4_xs_q8_K = DotIQ4_XSQ8_K;
    s.dot4_iq4_xs_q8_K = Dot4<DotIQ4_XSQ8_K>;
    return s;
  }();
  return set;
}

}  // namespace micromoe::kernels
