#include "kernels/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/packed.h"
#include "kernels/quant.h"

namespace micromoe::kernels {
namespace {

using gguf::TensorType;

void GetScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void Q4_KToF32(const void* src, float* y, int64_t n) {
  const BlockQ4_K* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = Fp16ToFp32(b[i].d), dmin = Fp16ToFp32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2) {
      uint8_t sc, m;
      GetScaleMinK4(is, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      GetScaleMinK4(is + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
    }
  }
}

void Q5_KToF32(const void* src, float* y, int64_t n) {
  const BlockQ5_K* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = Fp16ToFp32(b[i].d), dmin = Fp16ToFp32(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    const uint8_t* qh = b[i].qh;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2) {
      uint8_t sc, m;
      GetScaleMinK4(is, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      GetScaleMinK4(is + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

void Q6_KToF32(const void* src, float* y, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = Fp16ToFp32(b[i].d);
    const uint8_t* ql = b[i].ql;
    const uint8_t* qh = b[i].qh;
    const int8_t* sc = b[i].scales;
    for (int half = 0; half < 2; ++half) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = static_cast<int8_t>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = static_cast<int8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

// The types whose activations are Q8_K blocks.
bool IsKQuant(TensorType type) {
  return type == TensorType::kQ2_K || type == TensorType::kQ3_K || type == TensorType::kQ4_K ||
         type == TensorType::kQ5_K || type == TensorType::kQ6_K || type == TensorType::kIQ4_XS;
}

template <class Block>
void LowKToF32(const void* src, float* dst, int64_t n) {
  const Block* b = static_cast<const Block*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = Fp16ToFp32(b[i].d);
    for (int e = 0; e < kQK_K; ++e) {
      if constexpr (std::is_same_v<Block, BlockQ2_K>) {
        const uint8_t sc = b[i].scales[e / 16];
        dst[i * kQK_K + e] = d * (sc & 0x0F) * LowKQuant(b[i], e) - Fp16ToFp32(b[i].dmin) * (sc >> 4);
      } else {
        dst[i * kQK_K + e] = d * Q3_KScale(b[i], e / 16) * LowKQuant(b[i], e);
      }
    }
  }
}

// 32 IQ4 nibbles (element j low in qs[j], j + 16 high) as scale times their values.
void IQ4NibblesToF32(const uint8_t* qs, float scale, float* y) {
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = scale * kIQ4NLValues[qs[j] & 0x0F];
    y[j + kQK / 2] = scale * kIQ4NLValues[qs[j] >> 4];
  }
}

void IQ4_XSToF32(const void* src, float* dst, int64_t n) {
  const BlockIQ4_XS* b = static_cast<const BlockIQ4_XS*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    for (int sub = 0; sub < kQK_K / 32; ++sub) {
      IQ4NibblesToF32(b[i].qs + 16 * sub, Fp16ToFp32(b[i].d) * IQ4_XSScale(b[i], sub), dst + i * kQK_K + 32 * sub);
    }
  }
}

void IQ4_NLToF32(const void* src, float* dst, int64_t n) {
  const BlockIQ4_NL* b = static_cast<const BlockIQ4_NL*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) IQ4NibblesToF32(b[i].qs, Fp16ToFp32(b[i].d), dst + i * kQK);
}

template <class Block>
void LegacyToF32(const void* src, float* dst, int64_t n) {
  const Block* b = static_cast<const Block*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = Fp16ToFp32(b[i].d);
    for (int j = 0; j < kQK; ++j) {
      if constexpr (std::is_same_v<Block, BlockQ5_0>) {
        dst[i * kQK + j] = d * (StoredQuant(b[i], j) - 16);
      } else {
        dst[i * kQK + j] = d * StoredQuant(b[i], j) + Fp16ToFp32(b[i].m);
      }
    }
  }
}

const KernelSet& Choose() {
  // MICROMOE_KERNELS=scalar|avx2|avx512 caps the choice (for comparisons and debugging).
  const char* cap = std::getenv("MICROMOE_KERNELS");
  const std::string want = cap ? cap : "";
  if (want == "scalar") return ScalarKernels();
  if (want == "avx2" && Avx2Kernels()) return *Avx2Kernels();
  if (want == "avx512" && Avx512Kernels()) return *Avx512Kernels();
  if (const KernelSet* k = AmxKernels()) return *k;
  if (const KernelSet* k = Avx512Kernels()) return *k;
  if (const KernelSet* k = Avx2Kernels()) return *k;
  return ScalarKernels();
}

}  // namespace

bool IsSupportedWeightType(TensorType type) {
  switch (type) {
    case TensorType::kF32: case TensorType::kF16: case TensorType::kBF16:
    case TensorType::kQ8_0: case TensorType::kQ4_0:
    case TensorType::kQ4_1: case TensorType::kQ5_0: case TensorType::kQ5_1: case TensorType::kIQ4_NL:
    case TensorType::kQ2_K: case TensorType::kQ3_K: case TensorType::kIQ4_XS:
    case TensorType::kQ4_K: case TensorType::kQ5_K: case TensorType::kQ6_K:
      return true;
    default:
      return false;
  }
}

const KernelSet& Active() {
  static const KernelSet& ks = Choose();
  return ks;
}

void DequantizeRow(TensorType type, const void* src, float* dst, int64_t n, const KernelSet& ks) {
  switch (type) {
    case TensorType::kF32: std::copy_n(static_cast<const float*>(src), n, dst); break;
    case TensorType::kF16: ks.f16_to_f32(src, dst, n); break;
    case TensorType::kBF16: ks.bf16_to_f32(src, dst, n); break;
    case TensorType::kQ8_0: ks.q8_0_to_f32(src, dst, n); break;
    case TensorType::kQ4_0: ks.q4_0_to_f32(src, dst, n); break;
    case TensorType::kQ4_K: Q4_KToF32(src, dst, n); break;
    case TensorType::kQ5_K: Q5_KToF32(src, dst, n); break;
    case TensorType::kQ6_K: Q6_KToF32(src, dst, n); break;
    case TensorType::kQ4_1: LegacyToF32<BlockQ4_1>(src, dst, n); break;
    case TensorType::kQ5_0: LegacyToF32<BlockQ5_0>(src, dst, n); break;
    case TensorType::kQ5_1: LegacyToF32<BlockQ5_1>(src, dst, n); break;
    case TensorType::kIQ4_NL: IQ4_NLToF32(src, dst, n); break;
    case TensorType::kIQ4_XS: IQ4_XSToF32(src, dst, n); break;
    case TensorType::kQ2_K: LowKToF32<BlockQ2_K>(src, dst, n); break;
    case TensorType::kQ3_K: LowKToF32<BlockQ3_K>(src, dst, n); break;
    default: break;  // unreachable: model loading rejects unsupported types
  }
}

void Activations::Prepare(TensorType weight_type, const float* x, int64_t ldx, int64_t n_x, int64_t cols,
                          const KernelSet& ks) {
  weight_type_ = weight_type;
  x_ = x;
  ldx_ = ldx;
  n_x_ = n_x;
  quantized_ = false;
  terms_stride_ = 0;
  if (weight_type == TensorType::kBF16) {
    rounded_.Resize(static_cast<size_t>(n_x * cols));
    bf16_.Resize(rounded_.size());
    for (int64_t r = 0; r < n_x; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        bf16_[r * cols + i] = Fp32ToBf16(x[r * ldx + i]);
        rounded_[r * cols + i] = Bf16ToFp32(bf16_[r * cols + i]);
      }
    }
    x_ = rounded_.data();
    ldx_ = cols;
    return;
  }
  if (IsKQuant(weight_type)) {
    q8_row_bytes_ = static_cast<uint64_t>(cols / kQK_K) * sizeof(BlockQ8_K);
    q8_.Resize(q8_row_bytes_ * n_x);
    quantized_ = true;
    for (int64_t r = 0; r < n_x; ++r) ks.quantize_q8_K(x + r * ldx, q8_.data() + r * q8_row_bytes_, cols);
    return;
  }
  if (weight_type != TensorType::kQ8_0 && weight_type != TensorType::kQ4_0 && weight_type != TensorType::kQ4_1 &&
      weight_type != TensorType::kQ5_0 && weight_type != TensorType::kQ5_1 && weight_type != TensorType::kIQ4_NL) {
    return;
  }
  const int64_t nb = cols / kQK;
  q8_row_bytes_ = static_cast<uint64_t>(nb) * sizeof(BlockQ8_0);
  q8_.Resize(q8_row_bytes_ * n_x);
  quantized_ = true;
  for (int64_t r = 0; r < n_x; ++r) ks.quantize_q8_0(x + r * ldx, q8_.data() + r * q8_row_bytes_, cols);
  // The packed kernels' per-block terms; the other 32-element types do not read them.
  if (weight_type != TensorType::kQ8_0 && weight_type != TensorType::kQ4_0 && weight_type != TensorType::kQ5_0 &&
      weight_type != TensorType::kIQ4_NL) {
    return;
  }
  terms_stride_ = 2 * static_cast<uint64_t>(nb);
  terms_.Resize(terms_stride_ * n_x);
  // The offset the packed kernels' unsigned weights carry (packed.h; IQ4_NL's values + 128).
  const int offset = weight_type == TensorType::kQ4_0 ? 8 : weight_type == TensorType::kQ5_0 ? 16 : 128;
  for (int64_t r = 0; r < n_x; ++r) {
    const BlockQ8_0* blocks = reinterpret_cast<const BlockQ8_0*>(q8_.data() + r * q8_row_bytes_);
    float* terms = terms_.data() + r * terms_stride_;
    for (int64_t b = 0; b < nb; ++b) {
      int sum = 0;
      for (int j = 0; j < kQK; ++j) sum += blocks[b].qs[j];
      terms[2 * b] = Fp16ToFp32(blocks[b].d);
      terms[2 * b + 1] = static_cast<float>(offset * sum);
    }
  }
}

namespace {

// What the packed kernels of one weight type read: activation rows (codes
// `stride` bytes apart) and per-row terms (the 32-element types only).
struct PackedInput {
  KernelSet::GemmX16 gemm;
  KernelSet::GemvGroups gemv;
  const uint8_t* codes;
  uint64_t stride;
  const float* terms;
  uint64_t terms_stride;
};

PackedInput PackedInputFor(TensorType type, const Activations& x, const KernelSet& ks) {
  switch (type) {
    case TensorType::kQ8_0:
      return {ks.gemm_q8_0_x16, ks.gemv_q8_0_groups, static_cast<const uint8_t*>(x.q8_row(0)), x.q8_row_bytes(),
              x.terms_row(0), x.terms_stride()};
    case TensorType::kQ4_0:
      return {ks.gemm_q4_0_x16, ks.gemv_q4_0_groups, static_cast<const uint8_t*>(x.q8_row(0)), x.q8_row_bytes(),
              x.terms_row(0), x.terms_stride()};
    case TensorType::kQ5_0:
      return {ks.gemm_q5_0_x16, ks.gemv_q5_0_groups, static_cast<const uint8_t*>(x.q8_row(0)), x.q8_row_bytes(),
              x.terms_row(0), x.terms_stride()};
    case TensorType::kIQ4_NL:
      return {ks.gemm_iq4_nl_x16, ks.gemv_iq4_nl_groups, static_cast<const uint8_t*>(x.q8_row(0)), x.q8_row_bytes(),
              x.terms_row(0), x.terms_stride()};
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
    case TensorType::kQ3_K:
    case TensorType::kQ2_K:
    case TensorType::kIQ4_XS: {  // no gemv: decode streams one group after another (kernel_set.h)
      const KernelSet::GemmX16 gemm = type == TensorType::kQ4_K   ? ks.gemm_q4_K_x16
                                      : type == TensorType::kQ5_K ? ks.gemm_q5_K_x16
                                      : type == TensorType::kQ6_K ? ks.gemm_q6_K_x16
                                      : type == TensorType::kQ3_K ? ks.gemm_q3_K_x16
                                      : type == TensorType::kQ2_K ? ks.gemm_q2_K_x16
                                                                  : ks.gemm_iq4_xs_x16;
      return {gemm, nullptr, static_cast<const uint8_t*>(x.q8_row(0)), x.q8_row_bytes(), nullptr, 0};
    }
    case TensorType::kBF16:
      return {ks.gemm_bf16_x16, ks.gemv_bf16_groups, reinterpret_cast<const uint8_t*>(x.bf16_row(0)),
              static_cast<uint64_t>(x.f32_stride()) * sizeof(uint16_t), nullptr, 0};
    default:  // F16, the one other type CanPack accepts
      return {ks.gemm_f16_x16, ks.gemv_f16_groups, reinterpret_cast<const uint8_t*>(x.f32_row(0)),
              static_cast<uint64_t>(x.f32_stride()) * sizeof(float), nullptr, 0};
  }
}

// Rows [o_begin, o_end) within the packed rows, a group of 16 rows and up to
// ks.packed_tile_rows activation rows per kernel call; each group's weights (a
// few KiB) stay in L1 while every activation tile passes over them.
void MatMulPackedRows(const MatrixView& w, const Activations& x, float* y, int64_t ldy, int64_t o_begin,
                      int64_t o_end, const KernelSet& ks) {
  const PackedInput in = PackedInputFor(w.type, x, ks);
  const int64_t nb = w.cols / (IsKQuant(w.type) ? kQK_K : kQK);
  const int64_t n_x = x.n_rows();
  float out[kMaxPackedTileRows * kPackRows];
  for (int64_t g = o_begin / kPackRows; g * kPackRows < o_end; ++g) {
    const uint8_t* group = w.packed + static_cast<uint64_t>(g) * w.packed_group_bytes;
    const int64_t first = std::max(o_begin, g * kPackRows);
    // Decode: all the whole groups of the range in one call (one activation
    // row, so the outputs are contiguous in y).
    const int64_t whole = o_end / kPackRows - g;
    if (n_x == 1 && in.gemv != nullptr && first == g * kPackRows && whole >= 1) {
      in.gemv(group, w.packed_group_bytes, whole, nb, in.codes, in.terms, y + g * kPackRows);
      g += whole - 1;
      continue;
    }
    const int64_t last = std::min(o_end, (g + 1) * kPackRows);
    for (int64_t r = 0; r < n_x; r += ks.packed_tile_rows) {
      const int tile = static_cast<int>(std::min<int64_t>(ks.packed_tile_rows, n_x - r));
      in.gemm(group, nb, in.codes + r * in.stride, in.stride, in.terms + r * in.terms_stride, in.terms_stride, tile,
              out);
      for (int t = 0; t < tile; ++t) {
        for (int64_t o = first; o < last; ++o) y[(r + t) * ldy + o] = out[t * kPackRows + (o - g * kPackRows)];
      }
    }
  }
}

// Rows [o_begin, o_end) with integer dot products on the quantized
// activations, four activation rows per call where there are four, so each
// weight row (in L1 meanwhile) is unpacked once per four.
void MatMulQuantizedRows(const MatrixView& w, const Activations& x, float* y, int64_t ldy, int64_t o_begin,
                         int64_t o_end, KernelSet::RowDot dot, KernelSet::RowDot4 dot4) {
  const int64_t n_x = x.n_rows();
  for (int64_t o = o_begin; o < o_end; ++o) {
    int64_t r = 0;
    for (float out[4]; r + 4 <= n_x; r += 4) {
      dot4(w.row(o), x.q8_row(r), x.q8_row_bytes(), w.cols, out);
      for (int i = 0; i < 4; ++i) y[(r + i) * ldy + o] = out[i];
    }
    for (; r < n_x; ++r) y[r * ldy + o] = dot(w.row(o), x.q8_row(r), w.cols);
  }
}

}  // namespace

void MatMulRows(const MatrixView& w, const Activations& x, float* y, int64_t ldy, int64_t o_begin,
                int64_t o_end, const KernelSet& ks) {
  const int64_t n_x = x.n_rows();
  if (x.weight_type() == w.type && w.packed != nullptr && CanPack(w.type, ks) && o_begin < w.packed_rows) {
    const int64_t packed_end = std::min(o_end, w.packed_rows);
    MatMulPackedRows(w, x, y, ldy, o_begin, packed_end, ks);
    o_begin = packed_end;
  }
  if (x.quantized()) {
    switch (w.type) {
      case TensorType::kQ8_0: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q8_0_q8_0, ks.dot4_q8_0_q8_0);
      case TensorType::kQ4_0: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q4_0_q8_0, ks.dot4_q4_0_q8_0);
      case TensorType::kQ4_K: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q4_K_q8_K, ks.dot4_q4_K_q8_K);
      case TensorType::kQ5_K: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q5_K_q8_K, ks.dot4_q5_K_q8_K);
      case TensorType::kQ6_K: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q6_K_q8_K, ks.dot4_q6_K_q8_K);
      case TensorType::kQ4_1: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q4_1_q8_0, ks.dot4_q4_1_q8_0);
      case TensorType::kQ5_0: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q5_0_q8_0, ks.dot4_q5_0_q8_0);
      case TensorType::kQ5_1: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q5_1_q8_0, ks.dot4_q5_1_q8_0);
      case TensorType::kIQ4_NL:
        return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_iq4_nl_q8_0, ks.dot4_iq4_nl_q8_0);
      case TensorType::kQ2_K: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q2_K_q8_K, ks.dot4_q2_K_q8_K);
      case TensorType::kQ3_K: return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_q3_K_q8_K, ks.dot4_q3_K_q8_K);
      case TensorType::kIQ4_XS:
        return MatMulQuantizedRows(w, x, y, ldy, o_begin, o_end, ks.dot_iq4_xs_q8_K, ks.dot4_iq4_xs_q8_K);
      default: return;  // Prepare quantizes for these types only
    }
  }
  if (w.type == TensorType::kF32) {
    for (int64_t o = o_begin; o < o_end; ++o) {
      const float* wr = reinterpret_cast<const float*>(w.row(o));
      for (int64_t r = 0; r < n_x; ++r) y[r * ldy + o] = ks.dot_f32(wr, x.f32_row(r), w.cols);
    }
    return;
  }
  // Half-precision rows are widened inside the dot product for one or two
  // activation rows (no conversion pass over memory); larger batches go
  // through the tiled product below.
  if ((w.type == TensorType::kF16 || w.type == TensorType::kBF16) && n_x <= 2) {
    const auto dot = w.type == TensorType::kF16 ? ks.dot_f16_f32 : ks.dot_bf16_f32;
    for (int64_t o = o_begin; o < o_end; ++o) {
      for (int64_t r = 0; r < n_x; ++r) y[r * ldy + o] = dot(w.row(o), x.f32_row(r), w.cols);
    }
    return;
  }
  // F16 / BF16 for three or more activation rows (the only case left): 16
  // weight rows at a time are converted once, stored column by column, and
  // multiplied with tiles of four activation rows (one output row per vector
  // lane, no horizontal sums).
  // Used only within this call (no oneTBB waits inside), so one per thread is safe.
  thread_local std::vector<float> rows, tile;
  rows.resize(static_cast<size_t>(w.cols) * kPackRows);
  tile.resize(static_cast<size_t>(w.cols) * kPackRows + 16);
  float* wt = tile.data() + (16 - reinterpret_cast<uintptr_t>(tile.data()) / sizeof(float) % 16) % 16;  // 64-byte aligned
  for (int64_t o0 = o_begin; o0 < o_end; o0 += kPackRows) {
    const int64_t n_o = std::min<int64_t>(kPackRows, o_end - o0);
    for (int64_t i = 0; i < kPackRows; ++i) {
      float* dst = rows.data() + i * w.cols;
      if (i < n_o) {
        DequantizeRow(w.type, w.row(o0 + i), dst, w.cols, ks);
      } else {
        std::fill_n(dst, w.cols, 0.0f);  // past the range: computed, never stored
      }
    }
    for (int64_t c = 0; c < w.cols; ++c) {
      for (int64_t i = 0; i < kPackRows; ++i) wt[c * kPackRows + i] = rows[i * w.cols + c];
    }
    float out[4 * kPackRows];
    for (int64_t r = 0; r < n_x; r += 4) {
      const int n_tile = static_cast<int>(std::min<int64_t>(4, n_x - r));
      ks.gemm_f32_x16(wt, w.cols, x.f32_row(r), x.f32_stride(), n_tile, out);
      for (int t = 0; t < n_tile; ++t) {
        for (int64_t i = 0; i < n_o; ++i) y[(r + t) * ldy + o0 + i] = out[t * kPackRows + i];
      }
    }
  }
}

void MatMul(const MatrixView& w, const float* x, int64_t ldx, int64_t n_x, float* y, int64_t ldy,
            const KernelSet& ks) {
  Activations a;
  a.Prepare(w.type, x, ldx, n_x, w.cols, ks);
  MatMulRows(w, a, y, ldy, 0, w.rows, ks);
}

}  // namespace micromoe::kernels
