// A SwiGLU feed-forward expert on weights in the mapping:
// out = down( silu(gate(x)) * up(x) ).
#pragma once

#include <initializer_list>
#include <utility>
#include <vector>

#include "experts/expert.h"
#include "kernels/kernels.h"

namespace micromoe::experts {

class LocalExpert final : public Expert {
 public:
  // gate, up: [ffn rows x dim cols]; down: [dim rows x ffn cols].
  LocalExpert(kernels::MatrixView gate, kernels::MatrixView up, kernels::MatrixView down);

  absl::Status Forward(const float* in, int64_t n_rows, float* out) const override;
  int64_t dim() const override { return gate_.cols; }
  int64_t ffn_dim() const { return gate_.rows; }
  const kernels::MatrixView& gate() const { return gate_; }
  const kernels::MatrixView& up() const { return up_; }
  const kernels::MatrixView& down() const { return down_; }
  // The memory this expert's weights occupy: ranges of the file mapping it
  // reads (rows not packed) and bytes of packed copies.
  std::vector<std::pair<const uint8_t*, uint64_t>> MappedRanges() const;
  uint64_t PackedBytes() const;

 private:
  kernels::MatrixView gate_, up_, down_;
};

// One expert's rows for ForwardLocalExperts.
struct LocalExpertCall {
  const LocalExpert* expert;
  const float* in;  // n_rows x dim
  int64_t n_rows;
  float* out;       // n_rows x dim, overwritten
};

// Several experts' blocks. On a WorkerTeam (a decode step), when every call
// has at most kMemoryBoundRows rows, whole experts run one per thread, as many
// as divide evenly among the team's threads. The others run as two parallel
// loops over all their weight rows: gate and up of every expert, then down of
// every expert, so that they share the cores.
void ForwardLocalExperts(const LocalExpertCall* calls, size_t n);

// Up to this many activation rows a product streams its weights once for all
// rows and is bound by memory (see RunProducts in local_expert.cc).
constexpr int64_t kMemoryBoundRows = 4;

// Multiplies `w` by n_x rows of x into y, splitting output rows across the
// oneTBB workers when the work is big enough to pay for it.
void ParallelMatMul(const kernels::MatrixView& w, const float* x, int64_t ldx, int64_t n_x,
                    float* y, int64_t ldy);

// One output of ParallelMatMuls: y = w x with row stride ldy.
struct Product {
  const kernels::MatrixView* w;
  float* y;
  int64_t ldy;
};

// Several products of the same input (Q/K/V, gate/up) as one parallel loop:
// one synchronisation instead of one per matrix, and the activations are
// quantized once for the matrices that share a weight type and width.
void ParallelMatMuls(std::initializer_list<Product> products, const float* x, int64_t ldx, int64_t n_x);

}  // namespace micromoe::experts
