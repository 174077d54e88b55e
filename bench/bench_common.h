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
#include "kernels/bandwidth.h"
#include "kernels/kernels.h"

namespace micromoe::bench {

// Read bandwidth in bytes/s, per thread count (index = threads; 0 unused).
struct Bandwidth {
  std::vector<double> by_threads;
  double at(int threads) const {
    return by_threads.empty() ? 0 : by_threads[std::clamp<int>(threads, 1, by_threads.size() - 1)];
  }
};

// The read bandwidth with `threads` workers (kernels/bandwidth.h).
inline double MeasureReadBandwidth(int threads) {
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  return kernels::MeasureReadBandwidth();
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
    bw.by_threads[t] = MeasureReadBandwidth(t);
    std::fprintf(stderr, "read bandwidth, %d thread%s (512 MiB, best of 3): %.2f GB/s = %.2f GiB/s\n", t,
                 t == 1 ? "" : "s", bw.by_threads[t] / 1e9, bw.by_threads[t] / (1u << 30));
    benchmark::AddCustomContext("micromoe_read_bandwidth_GBps_threads_" + std::to_string(t),
                                std::to_string(bw.by_threads[t] / 1e9));
  }
  std::fprintf(stderr, "bw_frac = bytes read per second / read bandwidth at the same thread count\n\n");
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
