#include "kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

namespace micromoe::kernels {

double MeasureReadBandwidth() {
  const size_t n = size_t{1} << 26;  // 64-bit words
  std::unique_ptr<uint64_t, decltype(&std::free)> buf(
      static_cast<uint64_t*>(std::aligned_alloc(64, n * sizeof(uint64_t))), &std::free);
  if (!buf) return 0;
  uint64_t* w = buf.get();
  tbb::parallel_for(tbb::blocked_range<size_t>(0, n), [&](const auto& r) {
    for (size_t i = r.begin(); i < r.end(); ++i) w[i] = i * 0x9E3779B97F4A7C15ull;
  });
  double best = 0;
  volatile uint64_t sink = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto t = std::chrono::steady_clock::now();
    const uint64_t total = tbb::parallel_reduce(
        tbb::blocked_range<size_t>(0, n, size_t{1} << 16), uint64_t{0},
        [&](const auto& r, uint64_t acc) {
          // Four streams, a quarter of the range apart; one load per line.
          const size_t quarter = (r.end() - r.begin()) / 4;
          const uint64_t* s0 = w + r.begin();
          const uint64_t *s1 = s0 + quarter, *s2 = s1 + quarter, *s3 = s2 + quarter;
          uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
          for (size_t i = 0; i < quarter; i += 8) {
            a0 += s0[i];
            a1 += s1[i];
            a2 += s2[i];
            a3 += s3[i];
          }
          return acc + (a0 ^ a1 ^ a2 ^ a3);
        },
        [](uint64_t a, uint64_t b) { return a + b; });
    sink = sink + total;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    best = std::max(best, n * sizeof(uint64_t) / s);  // every line of the buffer was read
  }
  return best;
}

}  // namespace micromoe::kernels
