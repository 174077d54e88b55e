#include "experts/local_expert.h"

#include <cmath>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include "base/scratch.h"
#include "kernels/packed.h"

namespace micromoe::experts {

void ParallelMatMul(const kernels::MatrixView& w, const float* x, int64_t ldx, int64_t n_x,
                    float* y, int64_t ldy) {
  // Work is split in units of 16 rows (one packed group, see kernels/packed.h);
  // about 64K multiply-adds per task keeps scheduling overhead small.
  constexpr int64_t kUnit = kernels::kPackRows;
  const int64_t units = (w.rows + kUnit - 1) / kUnit;
  const int64_t work_per_unit = std::max<int64_t>(1, w.cols * n_x * kUnit);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work_per_unit);
  kernels::Activations a;
  a.Prepare(w.type, x, ldx, n_x, w.cols);
  if (grain >= units) {
    kernels::MatMulRows(w, a, y, ldy, 0, w.rows);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, units, grain), [&](const tbb::blocked_range<int64_t>& r) {
    kernels::MatMulRows(w, a, y, ldy, r.begin() * kUnit, std::min(w.rows, r.end() * kUnit));
  });
}

LocalExpert::LocalExpert(kernels::MatrixView gate, kernels::MatrixView up, kernels::MatrixView down)
    : gate_(gate), up_(up), down_(down) {}

absl::Status LocalExpert::Forward(const float* in, int64_t n_rows, float* out) const {
  const int64_t ff = gate_.rows;
  Scratch<float> g(static_cast<size_t>(n_rows) * ff), u(g.size());
  ParallelMatMul(gate_, in, dim(), n_rows, g.data(), ff);
  ParallelMatMul(up_, in, dim(), n_rows, u.data(), ff);
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  ParallelMatMul(down_, g.data(), ff, n_rows, out, dim());
  return absl::OkStatus();
}

}  // namespace micromoe::experts
