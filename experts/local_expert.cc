#include "experts/local_expert.h"

#include <algorithm>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include "base/scratch.h"
#include "kernels/packed.h"

namespace micromoe::experts {

void ParallelMatMuls(std::initializer_list<Product> products, const float* x, int64_t ldx, int64_t n_x) {
  const kernels::MatrixView& first = *products.begin()->w;
  for (const Product& p : products) {
    if (p.w->type != first.type || p.w->cols != first.cols) {
      for (const Product& q : products) ParallelMatMuls({q}, x, ldx, n_x);
      return;
    }
  }
  // Work is split in units of 16 rows (one packed group, see kernels/packed.h)
  // numbered across the products. A task takes at least 64K multiply-adds
  // and at least four units (decode streams four groups at once, see
  // KernelSet::gemv_*_groups), and up to 16 units while that still leaves
  // four tasks per worker: tasks of a microsecond or two cost their
  // scheduling (16-unit tasks decoded 5-10% faster than 4-unit ones at 2
  // threads).
  constexpr int64_t kUnit = kernels::kPackRows;
  int64_t units = 0;
  for (const Product& p : products) units += (p.w->rows + kUnit - 1) / kUnit;
  const int64_t workers = std::min<int64_t>(
      tbb::this_task_arena::max_concurrency(),
      static_cast<int64_t>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism)));
  const int64_t grain = std::max({int64_t{kernels::kGemvStreams}, std::min<int64_t>(16, units / (4 * workers)),
                                  (int64_t{1} << 16) / std::max<int64_t>(1, first.cols * n_x * kUnit)});
  kernels::Activations a;
  a.Prepare(first.type, x, ldx, n_x, first.cols);
  auto run_units = [&](int64_t begin, int64_t end) {
    int64_t base = 0;  // first unit of the current product
    for (const Product& p : products) {
      const int64_t n_units = (p.w->rows + kUnit - 1) / kUnit;
      const int64_t b = std::max(begin, base), e = std::min(end, base + n_units);
      if (b < e) kernels::MatMulRows(*p.w, a, p.y, p.ldy, (b - base) * kUnit, std::min(p.w->rows, (e - base) * kUnit));
      base += n_units;
    }
  };
  if (grain >= units) {
    run_units(0, units);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, units, grain),
                    [&](const tbb::blocked_range<int64_t>& r) { run_units(r.begin(), r.end()); });
}

void ParallelMatMul(const kernels::MatrixView& w, const float* x, int64_t ldx, int64_t n_x, float* y, int64_t ldy) {
  ParallelMatMuls({{&w, y, ldy}}, x, ldx, n_x);
}

LocalExpert::LocalExpert(kernels::MatrixView gate, kernels::MatrixView up, kernels::MatrixView down)
    : gate_(gate), up_(up), down_(down) {}

std::vector<std::pair<const uint8_t*, uint64_t>> LocalExpert::MappedRanges() const {
  std::vector<std::pair<const uint8_t*, uint64_t>> out;
  for (const kernels::MatrixView* m : {&gate_, &up_, &down_}) {
    if (m->packed_rows < m->rows) out.emplace_back(m->row(m->packed_rows), (m->rows - m->packed_rows) * m->row_bytes);
  }
  return out;
}

uint64_t LocalExpert::PackedBytes() const {
  uint64_t n = 0;
  for (const kernels::MatrixView* m : {&gate_, &up_, &down_}) n += m->packed_rows / kernels::kPackRows * m->packed_group_bytes;
  return n;
}

absl::Status LocalExpert::Forward(const float* in, int64_t n_rows, float* out) const {
  const int64_t ff = gate_.rows;
  Scratch<float> g(static_cast<size_t>(n_rows) * ff), u(g.size());
  ParallelMatMuls({{&gate_, g.data(), ff}, {&up_, u.data(), ff}}, in, dim(), n_rows);
  kernels::Active().swiglu_f32(g.data(), u.data(), static_cast<int64_t>(g.size()));
  ParallelMatMul(down_, g.data(), ff, n_rows, out, dim());
  return absl::OkStatus();
}

}  // namespace micromoe::experts
