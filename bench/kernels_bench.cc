// Kernel micro-benchmarks, for every back-end this CPU runs (scalar, avx2,
// avx512; unavailable ones are not registered):
//   row/<kernel>/<backend>        one row primitive on rows of 4096 elements
//                                 (in L1: the kernel's compute speed; dot4_*
//                                 one weight row against four activation
//                                 rows);
//   matmul/<type>/<backend>       W x for one activation row, W 2816 x 1024,
//                                 single-threaded, rotating through enough
//                                 copies of W (>= 256 MiB) that every
//                                 iteration streams its weights from memory;
//                                 each copy 64-byte aligned;
//   matmul_parallel/<type>/threads:N  the same through ParallelMatMul (the
//                                 oneTBB row split the experts use), active
//                                 back-end, packed weights where it packs;
//   matmul_align32/<type>/<backend>  as matmul, each copy 32 bytes off a
//                                 64-byte boundary (GGUF aligns tensors to 32);
//   matmul_packed/<type>/<backend>  as matmul, on weights repacked at load
//                                 (kernels/packed.h) for back-ends that have
//                                 packed kernels;
//   gemm[_packed]/<type>/<backend>/rows:N  W x for N activation rows (the
//                                 prompt path: one expert's tokens), weights
//                                 from memory as above; items are
//                                 multiply-adds.
//   attention/<backend>/ctx:N    one decode step of grouped-query attention
//                                 over N cached positions (16 query heads,
//                                 4 KV heads of 64, the bench model's shape):
//                                 per KV head dot_rows, softmax and
//                                 weighted_rows on a KV-cache layout (rows
//                                 kv_dim floats apart), rotating through
//                                 >= 256 MiB of caches so K and V stream from
//                                 memory;
// bytes_per_second counts the bytes the kernel reads (weights for matmul,
// K and V rows for attention);
// bw_frac divides it by the plain read bandwidth measured at start-up with
// the same number of threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <tbb/global_control.h>

#include "bench/bench_common.h"
#include "experts/local_expert.h"
#include "gguf/types.h"
#include "kernels/kernel_set.h"
#include "kernels/kernels.h"
#include "kernels/packed.h"
#include "kernels/quant.h"
#include "kernels/quantize.h"

namespace micromoe::bench {
namespace {

using gguf::TensorType;
using kernels::KernelSet;

constexpr int64_t kRow = 4096;                    // elements per row benchmark
constexpr int64_t kRows = 2816, kCols = 1024;     // the benchmark model's expert gate/up shape
constexpr uint64_t kMinWorkingSet = 256ull << 20;  // bytes of weights rotated through

uint64_t RowBytes(TensorType type, int64_t n) {
  const gguf::TypeTraits* t = gguf::FindTypeTraits(static_cast<uint32_t>(type));
  return static_cast<uint64_t>(n) / t->block_elements * t->block_bytes;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// A weight matrix of `type` with realistic values: quantized from random
// floats where micromoe can quantize to the type; otherwise random bits with
// the block scales set to a small normal fp16 (no NaN, inf or subnormal).
std::vector<uint8_t> RandomMatrix(TensorType type, int64_t rows, int64_t cols, uint32_t seed) {
  if (kernels::CanQuantizeTo(type)) {
    const std::vector<float> f = RandomFloats(static_cast<size_t>(rows) * cols, seed);
    return kernels::QuantizeTensor(type, f.data(), rows, cols);
  }
  std::vector<uint8_t> bytes(RowBytes(type, cols) * rows);
  std::mt19937 rng(seed);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  const uint16_t scale = kernels::Fp32ToFp16(0.01f);
  if (type == TensorType::kIQ4_NL) {
    for (size_t i = 0; i < bytes.size() / sizeof(kernels::BlockIQ4_NL); ++i) {
      reinterpret_cast<kernels::BlockIQ4_NL*>(bytes.data())[i].d = scale;
    }
    return bytes;
  }
  const size_t n_blocks = bytes.size() / RowBytes(type, kernels::kQK_K);
  for (size_t i = 0; i < n_blocks; ++i) {
    if (type == TensorType::kQ2_K) {
      auto* b = reinterpret_cast<kernels::BlockQ2_K*>(bytes.data()) + i;
      b->d = b->dmin = scale;
    } else if (type == TensorType::kQ3_K) {
      reinterpret_cast<kernels::BlockQ3_K*>(bytes.data())[i].d = scale;
    } else if (type == TensorType::kIQ4_XS) {
      reinterpret_cast<kernels::BlockIQ4_XS*>(bytes.data())[i].d = scale;
    } else if (type == TensorType::kQ4_K) {
      auto* b = reinterpret_cast<kernels::BlockQ4_K*>(bytes.data()) + i;
      b->d = b->dmin = scale;
    } else if (type == TensorType::kQ5_K) {
      auto* b = reinterpret_cast<kernels::BlockQ5_K*>(bytes.data()) + i;
      b->d = b->dmin = scale;
    } else if (type == TensorType::kQ6_K) {
      auto* b = reinterpret_cast<kernels::BlockQ6_K*>(bytes.data()) + i;
      b->d = scale;
    }
  }
  return bytes;
}

// ------------------------------------------------------------ row kernels --

enum class RowKernel {
  kDotF32, kAxpyF32, kF16, kBf16, kQ8_0, kQ4_0, kQuantizeQ8_0, kDotQ8_0, kDotQ4_0, kGemmQ8_0X16, kGemmQ4_0X16,
  kQuantizeQ8_K, kDotQ4_K, kDotQ5_K, kDotQ6_K, kDot4Q4_K, kDot4Q5_K, kDot4Q6_K, kSwiGlu
};

struct RowKernelInfo {
  RowKernel kernel;
  const char* name;
};
constexpr RowKernelInfo kRowKernels[] = {
    {RowKernel::kDotF32, "dot_f32"},         {RowKernel::kAxpyF32, "axpy_f32"},
    {RowKernel::kF16, "f16_to_f32"},         {RowKernel::kBf16, "bf16_to_f32"},
    {RowKernel::kQ8_0, "q8_0_to_f32"},       {RowKernel::kQ4_0, "q4_0_to_f32"},
    {RowKernel::kQuantizeQ8_0, "quantize_q8_0"}, {RowKernel::kDotQ8_0, "dot_q8_0_q8_0"},
    {RowKernel::kDotQ4_0, "dot_q4_0_q8_0"},     {RowKernel::kGemmQ8_0X16, "gemm_q8_0_x16"},
    {RowKernel::kGemmQ4_0X16, "gemm_q4_0_x16"},   {RowKernel::kQuantizeQ8_K, "quantize_q8_K"},
    {RowKernel::kDotQ4_K, "dot_q4_K_q8_K"},       {RowKernel::kDotQ5_K, "dot_q5_K_q8_K"},
    {RowKernel::kDotQ6_K, "dot_q6_K_q8_K"},       {RowKernel::kDot4Q4_K, "dot4_q4_K_q8_K"},
    {RowKernel::kDot4Q5_K, "dot4_q5_K_q8_K"},     {RowKernel::kDot4Q6_K, "dot4_q6_K_q8_K"},
    {RowKernel::kSwiGlu, "swiglu_f32"},
};

void BM_RowKernel(benchmark::State& state, const KernelSet* ks, RowKernel kernel, double bandwidth) {
  const std::vector<float> a = RandomFloats(kRow, 1), b = RandomFloats(kRow, 2);
  std::vector<float> out(kRow);
  const std::vector<uint8_t> f16 = kernels::QuantizeTensor(TensorType::kF16, a.data(), 1, kRow);
  const std::vector<uint8_t> bf16 = kernels::QuantizeTensor(TensorType::kBF16, a.data(), 1, kRow);
  const std::vector<uint8_t> q8 = kernels::QuantizeTensor(TensorType::kQ8_0, a.data(), 1, kRow);
  const std::vector<uint8_t> q4 = kernels::QuantizeTensor(TensorType::kQ4_0, a.data(), 1, kRow);
  const std::vector<uint8_t> x8 = kernels::QuantizeTensor(TensorType::kQ8_0, b.data(), 1, kRow);
  std::vector<uint8_t> q8_out(q8.size());
  double bytes = 0;  // bytes read per call
  const Stopwatch loop;
  switch (kernel) {
    case RowKernel::kDotF32:
      for (auto _ : state) benchmark::DoNotOptimize(ks->dot_f32(a.data(), b.data(), kRow));
      bytes = 2.0 * kRow * sizeof(float);
      break;
    case RowKernel::kAxpyF32:
      for (auto _ : state) {
        ks->axpy_f32(1e-7f, a.data(), out.data(), kRow);
        benchmark::ClobberMemory();
      }
      bytes = 2.0 * kRow * sizeof(float);  // x and y
      break;
    case RowKernel::kF16:
    case RowKernel::kBf16:
    case RowKernel::kQ8_0:
    case RowKernel::kQ4_0: {
      const auto fn = kernel == RowKernel::kF16    ? ks->f16_to_f32
                      : kernel == RowKernel::kBf16 ? ks->bf16_to_f32
                      : kernel == RowKernel::kQ8_0 ? ks->q8_0_to_f32
                                                   : ks->q4_0_to_f32;
      const std::vector<uint8_t>& src = kernel == RowKernel::kF16    ? f16
                                        : kernel == RowKernel::kBf16 ? bf16
                                        : kernel == RowKernel::kQ8_0 ? q8
                                                                     : q4;
      for (auto _ : state) {
        fn(src.data(), out.data(), kRow);
        benchmark::ClobberMemory();
      }
      bytes = static_cast<double>(src.size());
      break;
    }
    case RowKernel::kSwiGlu: {
      // up = 1 / sigmoid(gate), so the gates it overwrites stay near their
      // start (no drift into denormals over the iterations).
      std::vector<float> up(kRow);
      for (size_t i = 0; i < kRow; ++i) up[i] = 1.0f + std::exp(-a[i]);
      out = a;
      for (auto _ : state) {
        ks->swiglu_f32(out.data(), up.data(), kRow);
        benchmark::ClobberMemory();
      }
      bytes = 2.0 * kRow * sizeof(float);  // gate and up
      break;
    }
    case RowKernel::kQuantizeQ8_0:
      for (auto _ : state) {
        ks->quantize_q8_0(a.data(), q8_out.data(), kRow);
        benchmark::ClobberMemory();
      }
      bytes = kRow * sizeof(float);
      break;
    case RowKernel::kGemmQ8_0X16:
    case RowKernel::kGemmQ4_0X16: {
      // One packed group (16 rows of kRow) against one activation row.
      const TensorType type = kernel == RowKernel::kGemmQ8_0X16 ? TensorType::kQ8_0 : TensorType::kQ4_0;
      if (!kernels::CanPack(type, *ks)) {
        state.SkipWithError("no packed kernel in this back-end");
        return;
      }
      const std::vector<uint8_t> w = RandomMatrix(type, kernels::kPackRows, kRow, 5);
      kernels::PackedArena arena(kernels::PackedBytes(type, kernels::kPackRows, kRow));
      const kernels::MatrixView packed = arena.Pack({type, w.data(), kernels::kPackRows, kRow, RowBytes(type, kRow)});
      kernels::Activations act;
      act.Prepare(type, b.data(), kRow, 1, kRow, *ks);
      const auto fn = type == TensorType::kQ8_0 ? ks->gemm_q8_0_x16 : ks->gemm_q4_0_x16;
      for (auto _ : state) {
        fn(packed.packed, kRow / kernels::kQK, static_cast<const uint8_t*>(act.q8_row(0)), act.q8_row_bytes(),
           act.terms_row(0), act.terms_stride(), 1, out.data());
        benchmark::ClobberMemory();
      }
      bytes = static_cast<double>(arena.used_bytes() + x8.size());
      break;
    }
    case RowKernel::kQuantizeQ8_K: {
      std::vector<uint8_t> q8_k(kRow / kernels::kQK_K * sizeof(kernels::BlockQ8_K));
      for (auto _ : state) {
        ks->quantize_q8_K(a.data(), q8_k.data(), kRow);
        benchmark::ClobberMemory();
      }
      bytes = kRow * sizeof(float);
      break;
    }
    case RowKernel::kDotQ4_K:
    case RowKernel::kDotQ5_K:
    case RowKernel::kDotQ6_K:
    case RowKernel::kDot4Q4_K:
    case RowKernel::kDot4Q5_K:
    case RowKernel::kDot4Q6_K: {
      // One weight row against one (dot) or four (dot4) Q8_K activation rows.
      const bool four = kernel == RowKernel::kDot4Q4_K || kernel == RowKernel::kDot4Q5_K || kernel == RowKernel::kDot4Q6_K;
      const TensorType type = kernel == RowKernel::kDotQ4_K || kernel == RowKernel::kDot4Q4_K   ? TensorType::kQ4_K
                              : kernel == RowKernel::kDotQ5_K || kernel == RowKernel::kDot4Q5_K ? TensorType::kQ5_K
                                                                                                : TensorType::kQ6_K;
      const std::vector<uint8_t> w = RandomMatrix(type, 1, kRow, 5);
      const std::vector<float> x = RandomFloats(4 * kRow, 6);
      kernels::Activations act;
      act.Prepare(type, x.data(), kRow, four ? 4 : 1, kRow, *ks);
      const auto dot = type == TensorType::kQ4_K ? ks->dot_q4_K_q8_K
                       : type == TensorType::kQ5_K ? ks->dot_q5_K_q8_K
                                                   : ks->dot_q6_K_q8_K;
      const auto dot4 = type == TensorType::kQ4_K ? ks->dot4_q4_K_q8_K
                        : type == TensorType::kQ5_K ? ks->dot4_q5_K_q8_K
                                                    : ks->dot4_q6_K_q8_K;
      float out4[4];
      for (auto _ : state) {
        if (four) {
          dot4(w.data(), act.q8_row(0), act.q8_row_bytes(), kRow, out4);
          benchmark::DoNotOptimize(out4);
        } else {
          benchmark::DoNotOptimize(dot(w.data(), act.q8_row(0), kRow));
        }
      }
      bytes = static_cast<double>(w.size() + act.q8_row_bytes() * (four ? 4 : 1));
      break;
    }
    case RowKernel::kDotQ8_0:
      for (auto _ : state) benchmark::DoNotOptimize(ks->dot_q8_0_q8_0(q8.data(), x8.data(), kRow));
      bytes = static_cast<double>(q8.size() + x8.size());
      break;
    case RowKernel::kDotQ4_0:
      for (auto _ : state) benchmark::DoNotOptimize(ks->dot_q4_0_q8_0(q4.data(), x8.data(), kRow));
      bytes = static_cast<double>(q4.size() + x8.size());
      break;
  }
  ReportBytes(state, bytes, bandwidth, loop);
  state.SetItemsProcessed(state.iterations() * kRow);  // elements
}

// ------------------------------------------------------- matrix products --

// Copies of one random matrix of a type, together at least kMinWorkingSet
// bytes, each starting `offset` bytes past a 64-byte boundary (0: aligned for
// 512-bit loads; 32: what GGUF's default 32-byte alignment can give). Holds
// one type at a time (benchmarks run type by type), so memory stays near the
// working set.
class WeightPool {
 public:
  // The copies repacked (kernels/packed.h); built once per type.
  const std::vector<kernels::MatrixView>& GetPacked(TensorType type) {
    if (type == packed_type_ && !packed_views_.empty()) return packed_views_;
    packed_views_.clear();
    const std::vector<kernels::MatrixView>& plain = Get(type, 0);
    packed_ = std::make_unique<kernels::PackedArena>(kernels::PackedBytes(type, kRows, kCols) * plain.size());
    for (const kernels::MatrixView& w : plain) packed_views_.push_back(packed_->Pack(w));
    packed_type_ = type;
    return packed_views_;
  }

  const std::vector<kernels::MatrixView>& Get(TensorType type, uint64_t offset) {
    if (type == type_ && offset == offset_ && !views_.empty()) return views_;
    if (type != type_ || one_.empty()) one_ = RandomMatrix(type, kRows, kCols, 42);
    views_.clear();
    buffer_.clear();
    buffer_.shrink_to_fit();
    const uint64_t stride = (one_.size() + offset + 63) / 64 * 64;
    const uint64_t copies = std::max<uint64_t>(2, (kMinWorkingSet + one_.size() - 1) / one_.size());
    buffer_.resize(stride * copies + 64);
    uint8_t* base = buffer_.data() + (64 - reinterpret_cast<uintptr_t>(buffer_.data()) % 64) % 64 + offset;
    for (uint64_t i = 0; i < copies; ++i) {
      std::memcpy(base + i * stride, one_.data(), one_.size());
      views_.push_back({type, base + i * stride, kRows, kCols, RowBytes(type, kCols)});
    }
    type_ = type;
    offset_ = offset;
    return views_;
  }

 private:
  TensorType type_ = TensorType::kF32;
  uint64_t offset_ = 0;
  std::vector<uint8_t> one_, buffer_;
  std::vector<kernels::MatrixView> views_;
  TensorType packed_type_ = TensorType::kF32;
  std::unique_ptr<kernels::PackedArena> packed_;
  std::vector<kernels::MatrixView> packed_views_;
};

WeightPool& Pool() {
  static WeightPool pool;
  return pool;
}

enum class Layout { kMapped, kMappedOff32, kPacked };

// W x for `n_x` activation rows (state.range(0) when registered with Arg, else 1).
void BM_MatMul(benchmark::State& state, const KernelSet* ks, TensorType type, Layout layout, double bandwidth) {
  const std::vector<kernels::MatrixView>& w =
      layout == Layout::kPacked ? Pool().GetPacked(type) : Pool().Get(type, layout == Layout::kMappedOff32 ? 32 : 0);
  const int64_t n_x = state.range(0);
  const std::vector<float> x = RandomFloats(static_cast<size_t>(kCols) * n_x, 3);
  std::vector<float> y(static_cast<size_t>(kRows) * n_x);
  size_t i = 0;
  const Stopwatch loop;
  for (auto _ : state) {
    kernels::MatMul(w[i], x.data(), kCols, n_x, y.data(), kRows, *ks);
    benchmark::DoNotOptimize(y.data());
    if (++i == w.size()) i = 0;
  }
  ReportBytes(state, static_cast<double>(w[0].row_bytes * kRows), bandwidth, loop);
  state.counters["matrices"] = static_cast<double>(w.size());
  state.SetItemsProcessed(state.iterations() * kRows * kCols * n_x);
}

void BM_ParallelMatMul(benchmark::State& state, TensorType type, Bandwidth bandwidth) {
  const int threads = static_cast<int>(state.range(0));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  // Packed where the active back-end computes with packed weights, as models load them.
  const std::vector<kernels::MatrixView>& w = kernels::CanPack(type) ? Pool().GetPacked(type) : Pool().Get(type, 0);
  const std::vector<float> x = RandomFloats(kCols, 3);
  std::vector<float> y(kRows);
  size_t i = 0;
  const Stopwatch loop;
  for (auto _ : state) {
    experts::ParallelMatMul(w[i], x.data(), kCols, 1, y.data(), kRows);
    benchmark::DoNotOptimize(y.data());
    if (++i == w.size()) i = 0;
  }
  ReportBytes(state, static_cast<double>(w[0].row_bytes * kRows), bandwidth.at(threads), loop);
}

constexpr TensorType kMatMulTypes[] = {
    TensorType::kF32,  TensorType::kF16,  TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0,
    TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL, TensorType::kQ2_K,
    TensorType::kQ3_K, TensorType::kIQ4_XS, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K};

void BM_Attention(benchmark::State& state, const KernelSet* ks, double bandwidth) {
  constexpr int kHeads = 16, kKvHeads = 4, kHeadDim = 64, kGroup = kHeads / kKvHeads;
  constexpr int64_t kKvDim = kKvHeads * kHeadDim;
  const int64_t n = state.range(0);
  // runtime::KvCache's layout: K of each head (its n rows one after another), then V.
  const uint64_t cache_floats = 2 * static_cast<uint64_t>(n) * kKvDim;
  const size_t copies = std::max<size_t>(2, kMinWorkingSet / (cache_floats * sizeof(float)));
  // Page-aligned like runtime::KvCache, so rows start on cache lines.
  std::vector<std::unique_ptr<float, decltype(&std::free)>> caches;
  for (size_t c = 0; c < copies; ++c) {
    const size_t bytes = (cache_floats * sizeof(float) + 4095) / 4096 * 4096;
    caches.emplace_back(static_cast<float*>(std::aligned_alloc(4096, bytes)), &std::free);
    const std::vector<float> values = RandomFloats(cache_floats, static_cast<uint32_t>(c));
    std::copy(values.begin(), values.end(), caches.back().get());
  }
  const std::vector<float> q = RandomFloats(kHeads * kHeadDim, 5);
  std::vector<float> scores(static_cast<size_t>(kGroup) * n), out(kHeads * kHeadDim);
  size_t i = 0;
  const Stopwatch loop;
  for (auto _ : state) {
    const float* k = caches[i].get();
    const float* v = k + static_cast<uint64_t>(n) * kKvDim;
    for (int h = 0; h < kKvHeads; ++h) {
      const uint64_t head = static_cast<uint64_t>(h) * n * kHeadDim;
      ks->dot_rows_f32(q.data() + h * kGroup * kHeadDim, kHeadDim, kGroup, k + head, kHeadDim, n, kHeadDim,
                       scores.data(), n);
      for (int g = 0; g < kGroup; ++g) ks->softmax_f32(scores.data() + g * n, n, 0.125f);
      ks->weighted_rows_f32(scores.data(), n, kGroup, v + head, kHeadDim, n, kHeadDim,
                            out.data() + h * kGroup * kHeadDim, kHeadDim);
    }
    benchmark::DoNotOptimize(out.data());
    if (++i == caches.size()) i = 0;
  }
  ReportBytes(state, static_cast<double>(cache_floats * sizeof(float)), bandwidth, loop);
}

void RegisterAll(const Bandwidth& bw) {
  std::vector<const KernelSet*> backends = {&kernels::ScalarKernels()};
  if (const KernelSet* k = kernels::Avx2Kernels()) backends.push_back(k);
  if (const KernelSet* k = kernels::Avx512Kernels()) backends.push_back(k);
  if (const KernelSet* k = kernels::AmxKernels()) backends.push_back(k);  // its packed GEMM; the rest is avx512's
  for (const RowKernelInfo& rk : kRowKernels) {
    for (const KernelSet* ks : backends) {
      benchmark::RegisterBenchmark((std::string("row/") + rk.name + "/" + ks->name).c_str(), BM_RowKernel, ks,
                                   rk.kernel, bw.at(1))
          ->UseRealTime();
    }
  }
  for (const KernelSet* ks : backends) {
    benchmark::RegisterBenchmark((std::string("attention/") + ks->name).c_str(), BM_Attention, ks, bw.at(1))
        ->ArgName("ctx")
        ->Arg(1024)
        ->Arg(4096)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  // Grouped by type so the weight pool is built once per type.
  for (TensorType type : kMatMulTypes) {
    const std::string t(gguf::TypeName(type));
    for (const KernelSet* ks : backends) {
      benchmark::RegisterBenchmark(("matmul/" + t + "/" + ks->name).c_str(), BM_MatMul, ks, type, Layout::kMapped,
                                   bw.at(1))
          ->Arg(1)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      if (kernels::CanPack(type, *ks)) {
        benchmark::RegisterBenchmark(("matmul_packed/" + t + "/" + ks->name).c_str(), BM_MatMul, ks, type,
                                     Layout::kPacked, bw.at(1))
            ->Arg(1)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
      if (ks == &kernels::ScalarKernels()) continue;  // too slow to matter for prompts
      benchmark::RegisterBenchmark(("gemm/" + t + "/" + ks->name).c_str(), BM_MatMul, ks, type, Layout::kMapped,
                                   bw.at(1))
          ->ArgName("rows")
          ->Arg(32)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      if (kernels::CanPack(type, *ks)) {
        benchmark::RegisterBenchmark(("gemm_packed/" + t + "/" + ks->name).c_str(), BM_MatMul, ks, type,
                                     Layout::kPacked, bw.at(1))
            ->ArgName("rows")
            ->Arg(32)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
    auto* b = benchmark::RegisterBenchmark(("matmul_parallel/" + t).c_str(), BM_ParallelMatMul, type, bw);
    b->ArgName("threads")->UseRealTime()->Unit(benchmark::kMicrosecond);
    for (int threads = 1; threads <= MaxBenchThreads(); ++threads) b->Arg(threads);
    // Vector back-ends again on weights 32 bytes off a 64-byte boundary.
    for (const KernelSet* ks : backends) {
      if (ks == &kernels::ScalarKernels()) continue;
      benchmark::RegisterBenchmark(("matmul_align32/" + t + "/" + ks->name).c_str(), BM_MatMul, ks, type,
                                   Layout::kMappedOff32, bw.at(1))
          ->Arg(1)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace micromoe::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  using namespace micromoe::bench;
  std::fprintf(stderr, "matmul: %lld x %lld weights, one activation row; >= %llu MiB of weights rotated per type\n",
               static_cast<long long>(kRows), static_cast<long long>(kCols),
               static_cast<unsigned long long>(kMinWorkingSet >> 20));
  RegisterAll(DescribeMachineAndMeasure(MaxBenchThreads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
