// Shared by the benchmark programs: the machine header (CPU, features, kernel
// back-end, caches) and the read bandwidth that memory-bound figures are
// compared against, measured once at start-up the way `micromoe bench` does.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include "kernels/cpu_features.h"
#include "kernels/kernels.h"

namespace micromoe::bench {

// Read bandwidth in bytes/s, per thread count (index = threads; 0 unused).
struct Bandwidth {
  std::vector<double> by_threads;
  double at(int threads) const {
    return by_threads.empty() ? 0 : by_threads[std::clamp<int>(threads, 1, by_threads.size() - 1)];
  }
};

// A 512 MiB buffer (far larger than any cache) read `threads` ways, best of
// 3 passes, in bytes per second.
//   plain: 64-byte aligned, summed as 64-bit words (no kernel involved): the
//          bound the bw_frac counters use;
//   like_cli: what `micromoe bench` measures (the active back-end's dot_f32
//          over a malloc'd buffer, which is 16- but not 64-byte aligned),
//          printed for comparison.
enum class ReadMethod { kPlain, kLikeCli };

inline double MeasureReadBandwidth(int threads, ReadMethod method) {
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  const size_t n = size_t{1} << 27;  // floats
  std::vector<float> storage(n + 16);
  float* buf = storage.data();
  if (method == ReadMethod::kPlain) buf += (16 - reinterpret_cast<uintptr_t>(buf) % 64 / sizeof(float)) % 16;
  tbb::parallel_for(tbb::blocked_range<size_t>(0, n), [&](const auto& r) {
    for (size_t i = r.begin(); i < r.end(); ++i) buf[i] = static_cast<float>(i & 1023) * 1e-3f;
  });
  const kernels::KernelSet& ks = kernels::Active();
  const tbb::blocked_range<size_t> all(0, n, size_t{1} << 18);
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const auto t = std::chrono::steady_clock::now();
    if (method == ReadMethod::kLikeCli) {
      const float total = tbb::parallel_reduce(
          all, 0.0f, [&](const auto& r, float acc) { return acc + ks.dot_f32(buf + r.begin(), buf + r.begin(), r.size()); },
          [](float a, float b) { return a + b; });
      benchmark::DoNotOptimize(total);
    } else {
      const uint64_t total = tbb::parallel_reduce(
          all, uint64_t{0},
          [&](const auto& r, uint64_t acc) {
            const uint64_t* w = reinterpret_cast<const uint64_t*>(buf + r.begin());
            uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (size_t i = 0; i < r.size() / 2; i += 4) {
              a0 += w[i];
              a1 += w[i + 1];
              a2 += w[i + 2];
              a3 += w[i + 3];
            }
            return acc + (a0 ^ a1 ^ a2 ^ a3);
          },
          [](uint64_t a, uint64_t b) { return a + b; });
      benchmark::DoNotOptimize(total);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    best = std::max(best, n * sizeof(float) / s);
  }
  return best;
}

// Prints the machine header to stderr, records it in the benchmark context
// (so --benchmark_format=json carries it), and measures the read bandwidth
// for 1 .. max_threads threads.
inline Bandwidth DescribeMachineAndMeasure(int max_threads) {
  const kernels::CpuFeatures& cpu = kernels::GetCpuFeatures();
  std::string features;
  auto add = [&](bool on, const char* name) {
    if (on) features += std::string(features.empty() ? "" : " ") + name;
  };
  add(cpu.avx2, "avx2");
  add(cpu.fma, "fma");
  add(cpu.f16c, "f16c");
  add(cpu.avx512f, "avx512f");
  add(cpu.avx512bw, "avx512bw");
  add(cpu.avx512vl, "avx512vl");
  add(cpu.avx512vnni, "avx512vnni");
  add(cpu.avx512bf16, "avx512bf16");
  add(cpu.amx_tile, "amx_tile");
  add(cpu.amx_int8, "amx_int8");
  add(cpu.amx_bf16, "amx_bf16");
  std::string backends = kernels::ScalarKernels().name;
  if (kernels::Avx2Kernels()) backends += std::string(" ") + kernels::Avx2Kernels()->name;
  if (kernels::Avx512Kernels()) backends += std::string(" ") + kernels::Avx512Kernels()->name;
  const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE), l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  std::fprintf(stderr, "cpu: %s\nfeatures: %s\nkernel back-ends: %s (active: %s)\ncaches (as reported): L2 %ld KiB, L3 %ld MiB\n",
               cpu.brand.c_str(), features.c_str(), backends.c_str(), kernels::Active().name, l2 / 1024,
               l3 / (1024 * 1024));
  benchmark::AddCustomContext("micromoe_cpu", cpu.brand);
  benchmark::AddCustomContext("micromoe_features", features);
  benchmark::AddCustomContext("micromoe_backends", backends);
  benchmark::AddCustomContext("micromoe_active_backend", kernels::Active().name);

  Bandwidth bw;
  bw.by_threads.assign(max_threads + 1, 0);
  for (int t = 1; t <= max_threads; ++t) {
    bw.by_threads[t] = MeasureReadBandwidth(t, ReadMethod::kPlain);
    const double cli = MeasureReadBandwidth(t, ReadMethod::kLikeCli);
    std::fprintf(stderr,
                 "read bandwidth, %d thread%s (512 MiB, best of 3): %.2f GB/s = %.2f GiB/s "
                 "[as `micromoe bench` measures it: %.2f GB/s]\n",
                 t, t == 1 ? "" : "s", bw.by_threads[t] / 1e9, bw.by_threads[t] / (1u << 30), cli / 1e9);
    benchmark::AddCustomContext("micromoe_read_bandwidth_GBps_threads_" + std::to_string(t),
                                std::to_string(bw.by_threads[t] / 1e9));
    benchmark::AddCustomContext("micromoe_cli_method_read_bandwidth_GBps_threads_" + std::to_string(t),
                                std::to_string(cli / 1e9));
  }
  std::fprintf(stderr, "bw_frac = bytes read per second / read bandwidth (plain) at the same thread count\n\n");
  return bw;
}

// Threads to measure with: 1 and, where the machine has them, 2.
inline int MaxBenchThreads() { return std::min(2, tbb::info::default_concurrency()); }

// Wall-clock time of a benchmark loop (start it just before the loop).
class Stopwatch {
 public:
  double Seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Call right after the loop: bytes/s (Google Benchmark's bytes_per_second, in
// binary units) and bw_frac, the fraction of `bandwidth` (bytes/s) those
// bytes reached over the loop's wall time.
inline void ReportBytes(benchmark::State& state, double bytes_per_iteration, double bandwidth, const Stopwatch& loop) {
  const double seconds = loop.Seconds();
  const double total = bytes_per_iteration * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(total));
  if (bandwidth > 0 && seconds > 0) state.counters["bw_frac"] = total / seconds / bandwidth;
}

}  // namespace micromoe::bench
