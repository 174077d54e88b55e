#include "runtime/forward.h"

#include <cmath>
#include <optional>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include "base/scratch.h"
#include "base/str_cat.h"
#include "experts/local_expert.h"
#include "experts/worker_team.h"
#include "runtime/expert_executor.h"

namespace micromoe::runtime {
namespace {

void RmsNorm(const float* x, const float* w, int n, float eps, float* out) {
  // Four partial sums: one chain of n dependent double additions took about
  // 1.2 us at n = 1024, and a decode step normalises 17 rows.
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += static_cast<double>(x[i]) * x[i];
    s1 += static_cast<double>(x[i + 1]) * x[i + 1];
    s2 += static_cast<double>(x[i + 2]) * x[i + 2];
    s3 += static_cast<double>(x[i + 3]) * x[i + 3];
  }
  for (; i < n; ++i) s0 += static_cast<double>(x[i]) * x[i];
  const double sum = (s0 + s1) + (s2 + s3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(sum / n) + eps);
  for (int i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

void RmsNormRows(const float* x, const std::vector<float>& w, int n_rows, int dim, float eps, float* out) {
  for (int r = 0; r < n_rows; ++r) RmsNorm(x + static_cast<size_t>(r) * dim, w.data(), dim, eps, out + static_cast<size_t>(r) * dim);
}

// cos and sin of pos * base^(-2i/rope_dim) for i < rope_dim / 2, at cs[2i]
// and cs[2i + 1]: the same for every layer and for Q and K, so computed once
// per row (they had been 8% of a Q4_0 decode step's serial time).
void RopeAngles(int rope_dim, float base, int pos, float* cs) {
  for (int i = 0; i < rope_dim / 2; ++i) {
    const double theta = pos * std::pow(static_cast<double>(base), -2.0 * i / rope_dim);
    cs[2 * i] = static_cast<float>(std::cos(theta));
    cs[2 * i + 1] = static_cast<float>(std::sin(theta));
  }
}

// Rotates pairs of each head's first rope_dim values by the angles cs holds.
void Rope(float* v, int n_heads, int head_dim, int rope_dim, RopeStyle style, const float* cs) {
  const int half = rope_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    for (int h = 0; h < n_heads; ++h) {
      float* x = v + static_cast<size_t>(h) * head_dim;
      const int i0 = style == RopeStyle::kNormal ? 2 * i : i;
      const int i1 = style == RopeStyle::kNormal ? 2 * i + 1 : i + half;
      const float x0 = x[i0], x1 = x[i1];
      x[i0] = x0 * c - x1 * s;
      x[i1] = x0 * s + x1 * c;
    }
  }
}

void AddBias(float* x, const std::vector<float>& b, int n_rows) {
  if (b.empty()) return;
  const size_t n = b.size();
  for (int r = 0; r < n_rows; ++r) {
    for (size_t i = 0; i < n; ++i) x[r * n + i] += b[i];
  }
}

}  // namespace

absl::Status Forward(const Model& model, const std::vector<BatchRow>& rows, KvCache& kv,
                     std::vector<float>* logits, const ForwardOptions& options, ForwardReport* report) {
  const HParams& hp = model.hparams();
  const int n = static_cast<int>(rows.size());
  const int d = hp.n_embd, hd = hp.head_dim, kvd = hp.kv_dim(), qd = hp.n_head * hd;
  for (int r = 0; r < n; ++r) {
    const BatchRow& row = rows[r];
    if (row.token < 0 || row.token >= hp.n_vocab) {
      return absl::InvalidArgumentError(StrCat("row ", r, ": token id ", row.token, " is outside [0, ", hp.n_vocab, ")"));
    }
    if (row.pos < 0 || row.pos >= kv.n_ctx()) {
      return absl::InvalidArgumentError(StrCat("row ", r, ": position ", row.pos, " is outside the context [0, ", kv.n_ctx(), ")"));
    }
    if (row.seq < 0 || row.seq >= kv.max_sequences() || !kv.active(row.seq)) {
      return absl::InvalidArgumentError(StrCat("row ", r, ": sequence ", row.seq, " has no KV cache"));
    }
  }
  if (n == 0) return absl::OkStatus();
  // Decode steps: the loops below are short and bound by memory; a team
  // keeps the other cores waiting for them instead of asleep (worker_team.h).
  std::optional<experts::WorkerTeam> team;
  if (n <= experts::kMemoryBoundRows && !experts::WorkerTeam::Current()) team.emplace();

  Scratch<float> x(static_cast<size_t>(n) * d), xn(x.size()), ffn_out(x.size());
  Scratch<float> q(static_cast<size_t>(n) * qd), k(static_cast<size_t>(n) * kvd), v(k.size());
  Scratch<float> attn(q.size());
  for (int r = 0; r < n; ++r) {
    float* xr = x.data() + static_cast<size_t>(r) * d;
    kernels::DequantizeRow(model.token_embd().type, model.token_embd().row(rows[r].token), xr, d);
    if (hp.embedding_scale != 1.0f) {
      for (int i = 0; i < d; ++i) xr[i] *= hp.embedding_scale;
    }
  }
  Scratch<float> rope(static_cast<size_t>(n) * hp.rope_dim);
  for (int r = 0; r < n; ++r) RopeAngles(hp.rope_dim, hp.rope_base, rows[r].pos, rope.data() + static_cast<size_t>(r) * hp.rope_dim);
  constexpr uint64_t kParallelAttentionBytes = 1 << 20;
  uint64_t kv_bytes = 0;  // K and V read by one layer's attention
  for (const BatchRow& row : rows) kv_bytes += 2 * sizeof(float) * static_cast<uint64_t>(row.pos + 1) * kvd;
  const float kq_scale = hp.attention_scale != 0 ? hp.attention_scale : 1.0f / std::sqrt(static_cast<float>(hd));
  const int group = hp.n_head / hp.n_head_kv;
  // A plan from the pool keeps its vectors' capacity from earlier steps.
  Scratch<router::RoutingPlan> plans(1);
  router::RoutingPlan& plan = plans.data()[0];

  for (int il = 0; il < hp.n_layer; ++il) {
    const LayerWeights& L = model.layers()[il];
    RmsNormRows(x.data(), L.attn_norm, n, d, hp.rms_eps, xn.data());
    experts::ParallelMatMuls({{&L.wq, q.data(), qd}, {&L.wk, k.data(), kvd}, {&L.wv, v.data(), kvd}}, xn.data(), d, n);
    AddBias(q.data(), L.bq, n);
    AddBias(k.data(), L.bk, n);
    AddBias(v.data(), L.bv, n);
    for (int r = 0; r < n; ++r) {
      float* qr = q.data() + static_cast<size_t>(r) * qd;
      float* kr = k.data() + static_cast<size_t>(r) * kvd;
      if (static_cast<int>(L.q_norm.size()) == hd) {  // per head
        for (int h = 0; h < hp.n_head; ++h) RmsNorm(qr + h * hd, L.q_norm.data(), hd, hp.rms_eps, qr + h * hd);
        for (int h = 0; h < hp.n_head_kv; ++h) RmsNorm(kr + h * hd, L.k_norm.data(), hd, hp.rms_eps, kr + h * hd);
      } else if (!L.q_norm.empty()) {  // whole vector
        RmsNorm(qr, L.q_norm.data(), qd, hp.rms_eps, qr);
        RmsNorm(kr, L.k_norm.data(), kvd, hp.rms_eps, kr);
      }
      const float* cs = rope.data() + static_cast<size_t>(r) * hp.rope_dim;
      Rope(qr, hp.n_head, hd, hp.rope_dim, hp.rope_style, cs);
      Rope(kr, hp.n_head_kv, hd, hp.rope_dim, hp.rope_style, cs);
      const float* vr = v.data() + static_cast<size_t>(r) * kvd;
      const size_t at = static_cast<size_t>(rows[r].pos) * hd;
      for (int h = 0; h < hp.n_head_kv; ++h) {
        std::copy_n(kr + h * hd, hd, kv.k(il, rows[r].seq, h) + at);
        std::copy_n(vr + h * hd, hd, kv.v(il, rows[r].seq, h) + at);
      }
    }
    // Causal attention: each row sees its sequence's positions 0..pos. One job
    // per (row, KV head) takes the `group` query heads that share it, so each
    // cached K and V row is read once for all of them. On a decode step's
    // team the jobs are split across its threads at every length; otherwise,
    // below kParallelAttentionBytes of K/V they run on this thread (a oneTBB
    // loop then costs more than it saves).
    const int jobs = n * hp.n_head_kv;
    auto attend = [&](int begin, int end) {
      const kernels::KernelSet& ks = kernels::Active();
      Scratch<float> scores;
      for (int job = begin; job < end; ++job) {
        const int r = job / hp.n_head_kv, kvh = job % hp.n_head_kv;
        const int len = rows[r].pos + 1, seq = rows[r].seq;
        const float* qh = q.data() + static_cast<size_t>(r) * qd + kvh * group * hd;
        scores.Resize(static_cast<size_t>(group) * len);
        // A head's positions are consecutive rows of head_dim floats in the cache.
        ks.dot_rows_f32(qh, hd, group, kv.k(il, seq, kvh), hd, len, hd, scores.data(), len);
        for (int g = 0; g < group; ++g) ks.softmax_f32(scores.data() + static_cast<size_t>(g) * len, len, kq_scale);
        ks.weighted_rows_f32(scores.data(), len, group, kv.v(il, seq, kvh), hd, len, hd,
                             attn.data() + static_cast<size_t>(r) * qd + kvh * group * hd, hd);
      }
    };
    if (team) {
      const int parts = std::min(jobs, team->size());
      team->Run(parts, [&](int p) { attend(jobs * p / parts, jobs * (p + 1) / parts); });
    } else {
      tbb::parallel_for(tbb::blocked_range<int>(0, jobs, kv_bytes < kParallelAttentionBytes ? jobs : 1),
                        [&](const tbb::blocked_range<int>& range) { attend(range.begin(), range.end()); });
    }
    experts::ParallelMatMul(L.wo, attn.data(), qd, n, ffn_out.data(), d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += ffn_out[i] * hp.residual_scale;

    RmsNormRows(x.data(), L.ffn_norm, n, d, hp.rms_eps, xn.data());
    if (L.router) {
      L.router->Route(xn.data(), d, n, &plan);
      if (auto s = ExpertExecutor::Run(plan, xn.data(), d, il, model.experts(il), ffn_out.data(), options.expert_failure,
                                       report ? &report->dropped : nullptr);
          !s.ok()) {
        return s;
      }
      if (L.shared_expert) {
        Scratch<float> shared(x.size()), gate(static_cast<size_t>(n));
        if (auto s = L.shared_expert->Forward(xn.data(), n, shared.data()); !s.ok()) return s;
        kernels::MatMul(L.shared_gate, xn.data(), d, n, gate.data(), 1);
        for (int r = 0; r < n; ++r) {
          const float g = 1.0f / (1.0f + std::exp(-gate[r]));
          for (int i = 0; i < d; ++i) ffn_out[static_cast<size_t>(r) * d + i] += g * shared[static_cast<size_t>(r) * d + i];
        }
      }
    } else {
      if (auto s = L.dense_ffn->Forward(xn.data(), n, ffn_out.data()); !s.ok()) return s;
    }
    for (size_t i = 0; i < x.size(); ++i) x[i] += ffn_out[i] * hp.residual_scale;
  }

  // Output head for the rows that asked for logits.
  Scratch<float> heads(static_cast<size_t>(n) * d);
  int n_out = 0;
  for (int r = 0; r < n; ++r) {
    if (!rows[r].want_logits) continue;
    RmsNorm(x.data() + static_cast<size_t>(r) * d, model.output_norm().data(), d, hp.rms_eps,
            heads.data() + static_cast<size_t>(n_out++) * d);
  }
  logits->resize(static_cast<size_t>(n_out) * hp.n_vocab);
  experts::ParallelMatMul(model.output(), heads.data(), d, n_out, logits->data(), hp.n_vocab);
  if (hp.logit_scale != 1.0f) {
    for (float& l : *logits) l /= hp.logit_scale;
  }
  return absl::OkStatus();
}

}  // namespace micromoe::runtime
