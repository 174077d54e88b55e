// A kernel back-end: the row-level primitives every higher op is built from,
// as a table of functions (one table per instruction set). Private to kernels/.
#pragma once

#include <cstdint>

namespace micromoe::kernels {

constexpr int kMaxPackedTileRows = 16;
constexpr int kGemvStreams = 4;  // memory streams KernelSet::gemv_*_groups keeps in flight

struct KernelSet {
  const char* name;
  // sum_i a[i] * b[i]
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // sum_i w[i] * x[i] with w in F16 / BF16, converted on the fly
  float (*dot_f16_f32)(const void* w, const float* x, int64_t n);
  float (*dot_bf16_f32)(const void* w, const float* x, int64_t n);
  // y[i] += a * x[i]
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
  // Row conversions to F32; n is a multiple of the type's block size.
  void (*f16_to_f32)(const void* src, float* dst, int64_t n);
  void (*bf16_to_f32)(const void* src, float* dst, int64_t n);
  void (*q8_0_to_f32)(const void* src, float* dst, int64_t n);
  void (*q4_0_to_f32)(const void* src, float* dst, int64_t n);
  // Activations to Q8_0 blocks (n a multiple of 32), for integer dot products.
  void (*quantize_q8_0)(const float* src, void* dst, int64_t n);
  // Dot product of a weight row with a Q8_0 activation row, n elements.
  float (*dot_q8_0_q8_0)(const void* w, const void* x, int64_t n);
  float (*dot_q4_0_q8_0)(const void* w, const void* x, int64_t n);
  // The same for four activation rows at once (row i at x + i * x_stride
  // bytes), so each weight block is loaded and unpacked once: out[0..3].
  void (*dot4_q8_0_q8_0)(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out);
  void (*dot4_q4_0_q8_0)(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out);
  // Activations to Q8_K blocks (n a multiple of 256) for the K-quant dot
  // products: per 256, with max the value of largest magnitude (the first on
  // ties) and iscale = -127 / max in float, q = min(127, nearest-even(iscale *
  // x)), d = 1 / iscale, and the sums of each 16 codes; all zero for a block
  // of zeros. llama.cpp's quantize_row_q8_K rounds the same.
  void (*quantize_q8_K)(const float* src, void* dst, int64_t n);
  // Dot product of a K-quant weight row with a Q8_K activation row, n
  // elements (a multiple of 256), and the four-row forms as above.
  float (*dot_q4_K_q8_K)(const void* w, const void* x, int64_t n);
  float (*dot_q5_K_q8_K)(const void* w, const void* x, int64_t n);
  float (*dot_q6_K_q8_K)(const void* w, const void* x, int64_t n);
  void (*dot4_q4_K_q8_K)(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out);
  void (*dot4_q5_K_q8_K)(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out);
  void (*dot4_q6_K_q8_K)(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out);
  // One packed group of 16 weight rows with nb blocks (layout in packed.h)
  // against n_x (1..4) Q8_0 activation rows, row r at xq + r * xq_stride
  // bytes: out[r * 16 + i] = dot(weight row i, activation row r). `terms`
  // holds per activation row (terms_stride floats apart), per block b,
  // {d_x, C * sum of the block's codes} at 2b: C is the offset the packed
  // unsigned weights carry (128 for Q8_0, 8 for Q4_0). nullptr when the
  // back-end has no packed kernels (weights then stay unpacked).
  using GemmX16 = void (*)(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride,
                           const float* terms, uint64_t terms_stride, int n_x, float* out);
  GemmX16 gemm_q8_0_x16;
  GemmX16 gemm_q4_0_x16;
  // Sixteen F32 weight rows stored column by column (wt[c * 16 + i] is
  // column c of row i, cols columns) against n_x (1..4) F32 activation rows,
  // row r at x + r * ldx: out[r * 16 + i] = dot(weight row i, activation row r).
  // The prompt path of F16 / BF16 weights converts 16 rows once into this form.
  void (*gemm_f32_x16)(const float* wt, int64_t cols, const float* x, int64_t ldx, int n_x, float* out);
  // Attention of n_q query heads sharing one KV head (grouped-query
  // attention) over n cached rows of `dim` floats, row t at rows + t * stride,
  // each row read once for all heads. Head h's query, weights and output are
  // at q / w / out + h * ld. dot_rows: out[h][t] = dot(q[h], row t) (the
  // scores); weighted_rows: out[h][i] = sum_t w[h][t] * row t [i] for i < dim
  // (the weighted values; out is overwritten).
  void (*dot_rows_f32)(const float* q, uint64_t ld_q, int n_q, const float* rows, uint64_t stride, int64_t n,
                       int64_t dim, float* out, uint64_t ld_out);
  void (*weighted_rows_f32)(const float* w, uint64_t ld_w, int n_q, const float* rows, uint64_t stride, int64_t n,
                            int64_t dim, float* out, uint64_t ld_out);
  // The attention softmax in place over n >= 1 scores: s[t] = exp(scale *
  // s[t] - m) / sum, m the largest scaled score, the sum taken in double.
  // Vector back-ends compute exp with a polynomial good to about 1 ulp.
  void (*softmax_f32)(float* s, int64_t n, float scale);
  // The SwiGLU gate in place: g[i] = g[i] / (1 + exp(-g[i])) * u[i], the
  // vector back-ends with the softmax's exp polynomial.
  void (*swiglu_f32)(float* g, const float* u, int64_t n);
  // Decode over n_groups adjacent packed groups (16 weight rows each,
  // group_bytes apart) and one activation row: out[16 * n_groups]. They are
  // streamed as four contiguous quarters at once, sharing the activation
  // broadcasts: one core streamed Q8_0 at 21 GB/s one group at a time and
  // 36-42 GB/s as four streams. nullptr: gemm_*_x16 per group.
  using GemvGroups = void (*)(const uint8_t* group, uint64_t group_bytes, int64_t n_groups, int64_t nb,
                              const uint8_t* xq, const float* terms, float* out);
  GemvGroups gemv_q8_0_groups = nullptr;
  GemvGroups gemv_q4_0_groups = nullptr;
  // The most activation rows the packed gemm_*_x16 kernels take per call
  // (at most kMaxPackedTileRows).
  int packed_tile_rows = 4;
  // Packed BF16 and F16 (layout in packed.h), with the GemmX16 / GemvGroups
  // signatures: nb 32-column blocks, xq the activation rows (row r at xq + r *
  // xq_stride bytes) as BF16 for BF16 weights and as F32 for F16 weights,
  // terms unused; gemm_*_x16 take any n_x up to packed_tile_rows. Products
  // are exact in float; the sums are float (double in the scalar reference).
  // nullptr: the weights stay in the file layout.
  GemmX16 gemm_bf16_x16 = nullptr;
  GemvGroups gemv_bf16_groups = nullptr;
  GemmX16 gemm_f16_x16 = nullptr;
  GemvGroups gemv_f16_groups = nullptr;
  // Packed Q4_K, Q5_K and Q6_K (layout in packed.h), with the GemmX16 signature:
  // nb super-blocks of 256 columns, xq Q8_K activation rows, terms unused,
  // any n_x up to packed_tile_rows. Decode streams one group after another:
  // as four interleaved streams (gemv_*_groups) a core streamed them slower,
  // Q4_K 29-38 against 45-49 GB/s and Q6_K 28 against 40-44 at 2 threads.
  // nullptr: the weights stay in the file layout.
  GemmX16 gemm_q4_K_x16 = nullptr;
  GemmX16 gemm_q5_K_x16 = nullptr;
  GemmX16 gemm_q6_K_x16 = nullptr;
  GemmX16 gemm_iq4_xs_x16 = nullptr;  // packed IQ4_XS, Q3_K and Q2_K, the same way
  GemmX16 gemm_q3_K_x16 = nullptr;
  GemmX16 gemm_q2_K_x16 = nullptr;
  // Packed Q5_0 and IQ4_NL as packed Q4_0 (terms: C = 16 and 128), any n_x
  // up to packed_tile_rows.
  GemmX16 gemm_q5_0_x16 = nullptr;
  GemvGroups gemv_q5_0_groups = nullptr;
  GemmX16 gemm_iq4_nl_x16 = nullptr;
  GemvGroups gemv_iq4_nl_groups = nullptr;
  // Q4_1 / Q5_0 / Q5_1 weight rows (value d * q + m, d * (q - 16), d * q + m)
  // and IQ4_NL against Q8_0 activation rows, and Q2_K / Q3_K / IQ4_XS against
  // Q8_K ones, in the file layout, with the signatures of dot_q4_0_q8_0 and
  // dot4_q4_0_q8_0: the other types of published files that need no lookup
  // grids (llama.cpp's quantizer writes Q5_0 / Q5_1 / IQ4_NL for rows of
  // Q4_K / Q5_K / Q2_K-Q3_K files that 256 does not divide).
  using RowDot = float (*)(const void* w, const void* x, int64_t n);
  using RowDot4 = void (*)(const void* w, const void* x, uint64_t x_stride, int64_t n, float* out);
  RowDot dot_q4_1_q8_0 = nullptr, dot_q5_0_q8_0 = nullptr, dot_q5_1_q8_0 = nullptr, dot_iq4_nl_q8_0 = nullptr;
  RowDot dot_q2_K_q8_K = nullptr, dot_q3_K_q8_K = nullptr, dot_iq4_xs_q8_K = nullptr;
  RowDot4 dot4_q4_1_q8_0 = nullptr, dot4_q5_0_q8_0 = nullptr, dot4_q5_1_q8_0 = nullptr, dot4_iq4_nl_q8_0 = nullptr;
  RowDot4 dot4_q2_K_q8_K = nullptr, dot4_q3_K_q8_K = nullptr, dot4_iq4_xs_q8_K = nullptr;
};

// Plain C++ reference; always available.
const KernelSet& ScalarKernels();
// nullptr when the CPU lacks the instruction set.
const KernelSet* Avx2Kernels();
const KernelSet* Avx512Kernels();
// AVX-512 with AMX-INT8 tiles for packed prompt tiles of 5..16 rows (amx.cc);
// nullptr unless the CPU has AMX, Linux grants the tile state and the tiles
// agree with their emulation at start-up.
const KernelSet* AmxKernels();
// The same kernel over a C++ emulation of the tiles, for tests on machines
// without AMX (slow; never picked by Active()). nullptr without AVX-512.
const KernelSet* AmxEmulatedKernels();
// The start-up check behind AmxKernels(): the tile instructions against their
// emulation, with SIGILL / SIGSEGV caught, so it returns false rather than
// crashing where the CPU or Linux refuses the tiles.
bool AmxSelfCheckPasses();
// The same for the AMX-BF16 tiles.
bool AmxBf16SelfCheckPasses();

}  // namespace micromoe::kernels
