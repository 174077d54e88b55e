#include "experts/local_expert.h"

#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include "base/scratch.h"
#include "experts/worker_team.h"
#include "kernels/packed.h"

namespace micromoe::experts {

namespace {

// y = w x for one product of RunProducts, x prepared for w's weight type.
struct PreparedProduct {
  const kernels::MatrixView* w;
  const kernels::Activations* x;
  float* y;
  int64_t ldy;
};

// The products as one parallel loop. Work is split in units of 16 rows (one
// packed group, see kernels/packed.h) numbered across the products.
// - Up to kMemoryBoundRows activation rows, the kernels stream each weight
//   once for all rows, so the loop is bound by memory: one task per worker,
//   on the current WorkerTeam when there is one.
//   Each task streams its rows as four long runs (KernelSet::gemv_*_groups;
//   the K-quants as one), and a run's start costs a ramp of its prefetches: a batch-1 decode step
//   ran 10% faster (median of 8 runs, 2 threads) than with tasks of up to 16
//   units. Two tasks per worker, which leave room to balance a core slowed
//   by another process, measured slower for Q4_0 (tg128 at 2 threads,
//   medians 438 and 445 against 471 and 466 t/s in two sets of five
//   alternations) and the same for Q8_0.
// - Above it, a task takes at least 64K multiply-adds and at least four
//   units, and up to 16 units while that leaves four tasks per worker.

// Units [begin, end) of the products, numbered across them, on this thread.
void RunUnits(const PreparedProduct* products, size_t n_products, int64_t begin, int64_t end) {
  constexpr int64_t kUnit = kernels::kPackRows;
  int64_t base = 0;  // first unit of the current product
  for (size_t i = 0; i < n_products; ++i) {
    const PreparedProduct& p = products[i];
    const int64_t units = (p.w->rows + kUnit - 1) / kUnit;
    const int64_t b = std::max(begin, base), e = std::min(end, base + units);
    if (b < e) kernels::MatMulRows(*p.w, *p.x, p.y, p.ldy, (b - base) * kUnit, std::min(p.w->rows, (e - base) * kUnit));
    base += units;
  }
}

void RunProducts(const PreparedProduct* products, size_t n_products) {
  constexpr int64_t kUnit = kernels::kPackRows;
  auto units_of = [](const PreparedProduct& p) { return (p.w->rows + kUnit - 1) / kUnit; };
  int64_t units = 0, unit_work = 0;  // unit_work: multiply-adds of all units
  bool memory_bound = true;
  for (size_t i = 0; i < n_products; ++i) {
    units += units_of(products[i]);
    unit_work += units_of(products[i]) * products[i].w->cols * products[i].x->n_rows() * kUnit;
    memory_bound = memory_bound && products[i].x->n_rows() <= kMemoryBoundRows;
  }
  if (unit_work == 0) return;  // no weight rows or no activation rows
  WorkerTeam* team = memory_bound ? WorkerTeam::Current() : nullptr;
  const int64_t workers = team ? team->size() : AllowedThreads();
  const int64_t tasks = memory_bound ? workers : 4 * workers;
  int64_t grain = std::max<int64_t>(int64_t{kernels::kGemvStreams}, (units + tasks - 1) / tasks);
  if (!memory_bound) {
    grain = std::max(std::min<int64_t>(16, grain), (int64_t{1} << 16) * units / std::max<int64_t>(1, unit_work));
  }
  auto run_units = [&](int64_t begin, int64_t end) { RunUnits(products, n_products, begin, end); };
  if (grain >= units) {
    run_units(0, units);
    return;
  }
  if (team) {
    team->Run(static_cast<int>((units + grain - 1) / grain),
              [&](int part) { run_units(part * grain, std::min(units, (part + 1) * grain)); });
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, units, grain),
                    [&](const tbb::blocked_range<int64_t>& r) { run_units(r.begin(), r.end()); });
}

// prepared[i] = products[i] on x, for i < n. x is prepared once per weight
// type and width, in acts[0..n), so products of one type share their
// quantized activations.
void PrepareProducts(const Product* products, size_t n, const float* x, int64_t ldx, int64_t n_x,
                     kernels::Activations* acts, PreparedProduct* prepared) {
  for (size_t i = 0; i < n; ++i) {
    const kernels::MatrixView& w = *products[i].w;
    const kernels::Activations* a = nullptr;
    for (size_t j = 0; j < i && !a; ++j) {
      if (prepared[j].w->type == w.type && prepared[j].w->cols == w.cols) a = prepared[j].x;
    }
    if (!a) {
      acts[i].Prepare(w.type, x, ldx, n_x, w.cols);
      a = &acts[i];
    }
    prepared[i] = {&w, a, products[i].y, products[i].ldy};
  }
}

// Runs fn(i) for i < n: in parallel when `parallel`, on the current team
// when there is one (experts that share a decode step's loops then prepare
// their activations and SwiGLU side by side).
template <class Fn>
void ForEach(size_t n, bool parallel, const Fn& fn) {
  if (WorkerTeam* team = WorkerTeam::Current(); team && n > 1) {
    team->Run(static_cast<int>(n), [&](int i) { fn(static_cast<size_t>(i)); });
    return;
  }
  if (!parallel) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  tbb::parallel_for(size_t{0}, n, fn);
}

}  // namespace

void ParallelMatMuls(std::initializer_list<Product> products, const float* x, int64_t ldx, int64_t n_x) {
  // Up to kMaxJointProducts products share one loop, their activations on
  // the stack (this runs several times per layer).
  constexpr size_t kMaxJointProducts = 4;
  for (const Product* p = products.begin(); p != products.end();) {
    const size_t n = std::min<size_t>(kMaxJointProducts, products.end() - p);
    std::array<kernels::Activations, kMaxJointProducts> acts;
    std::array<PreparedProduct, kMaxJointProducts> prepared;
    PrepareProducts(p, n, x, ldx, n_x, acts.data(), prepared.data());
    RunProducts(prepared.data(), n);
    p += n;
  }
}

void ParallelMatMul(const kernels::MatrixView& w, const float* x, int64_t ldx, int64_t n_x, float* y, int64_t ldy) {
  ParallelMatMuls({{&w, y, ldy}}, x, ldx, n_x);
}

void ForwardLocalExperts(const LocalExpertCall* calls, size_t n) {
  // Hidden rows of every call, one after another: call i's at offset[i].
  Scratch<size_t> offsets(n + 1);
  size_t* const offset = offsets.data();
  offset[0] = 0;
  int64_t total_rows = 0;
  bool memory_bound = true;
  for (size_t i = 0; i < n; ++i) {
    offset[i + 1] = offset[i] + static_cast<size_t>(calls[i].n_rows) * calls[i].expert->ffn_dim();
    total_rows += calls[i].n_rows;
    memory_bound = memory_bound && calls[i].n_rows <= kMemoryBoundRows;
  }
  Scratch<float> g(offset[n]), u(offset[n]);
  // Pooled, as every step of a decode runs this once per layer (Activations
  // from the pool keep their buffers too).
  Scratch<kernels::Activations> activations(2 * n);
  Scratch<PreparedProduct> gate_up_products(2 * n), down_products(n);
  kernels::Activations* const acts = activations.data();
  PreparedProduct* const gate_up = gate_up_products.data();
  PreparedProduct* const down = down_products.data();
  auto prepare_gate_up = [&](size_t i) {
    const LocalExpert& e = *calls[i].expert;
    const Product products[] = {{&e.gate(), g.data() + offset[i], e.ffn_dim()}, {&e.up(), u.data() + offset[i], e.ffn_dim()}};
    PrepareProducts(products, 2, calls[i].in, e.dim(), calls[i].n_rows, &acts[2 * i], &gate_up[2 * i]);
  };
  auto prepare_down = [&](size_t i) {
    const LocalExpert& e = *calls[i].expert;
    kernels::Active().swiglu_f32(g.data() + offset[i], u.data() + offset[i], static_cast<int64_t>(offset[i + 1] - offset[i]));
    const Product product = {&e.down(), calls[i].out, e.dim()};
    PrepareProducts(&product, 1, g.data() + offset[i], e.ffn_dim(), calls[i].n_rows, &acts[2 * i], &down[i]);
  };
  // On a team (a decode step) whole experts run one per thread, as many as
  // divide evenly: no synchronisation inside an expert, and each thread
  // streams an expert's three matrices in one go (Q4_0 tg at 2 threads
  // 1.03-1.05x against the joint loops; README, design notes). The rest
  // share the loops.
  size_t joint_begin = 0;
  if (WorkerTeam* team = WorkerTeam::Current(); team && memory_bound) {
    joint_begin = n - n % static_cast<size_t>(team->size());
    team->Run(static_cast<int>(joint_begin), [&](int part) {
      const size_t i = static_cast<size_t>(part);
      prepare_gate_up(i);
      RunUnits(&gate_up[2 * i], 2, 0, std::numeric_limits<int64_t>::max());
      prepare_down(i);
      RunUnits(&down[i], 1, 0, std::numeric_limits<int64_t>::max());
    });
  }
  const size_t joint = n - joint_begin;
  if (joint == 0) return;
  // Preparing activations (quantizing) and the gate are per call; below a few
  // rows they cost less than waking a worker.
  const bool parallel_prep = total_rows > 4;
  ForEach(joint, parallel_prep, [&](size_t k) { prepare_gate_up(joint_begin + k); });
  RunProducts(&gate_up[2 * joint_begin], 2 * joint);
  ForEach(joint, parallel_prep, [&](size_t k) { prepare_down(joint_begin + k); });
  RunProducts(&down[joint_begin], joint);
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
  const LocalExpertCall call{this, in, n_rows, out};
  ForwardLocalExperts(&call, 1);
  return absl::OkStatus();
}

}  // namespace micromoe::experts
