#include "cli/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>

#include <nlohmann/json.hpp>
#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include "base/str_cat.h"
#include "kernels/bandwidth.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "runtime/forward.h"
#include "runtime/model.h"

namespace micromoe::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Stats {
  double mean = 0, sd = 0;
};

Stats Summarise(const std::vector<double>& v) {
  Stats s;
  for (double x : v) s.mean += x;
  s.mean /= v.size();
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / (v.size() - 1)) : 0;
  return s;
}

// Weight bytes one generated token reads: attention and router of every
// layer, the k experts it is routed to, the output head and one embedding row.
uint64_t ActiveBytesPerToken(const runtime::Model& m) {
  const runtime::HParams& hp = m.hparams();
  const gguf::File& f = m.file();
  auto bytes = [&](const std::string& name) { const auto* t = f.FindTensor(name); return t ? t->n_bytes : 0; };
  uint64_t total = m.output().row_bytes * m.output().rows + m.token_embd().row_bytes;
  for (int il = 0; il < hp.n_layer; ++il) {
    const std::string b = StrCat("blk.", il, ".");
    for (const char* n : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_gate_inp.weight",
                          "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", "ffn_gate_shexp.weight",
                          "ffn_up_shexp.weight", "ffn_down_shexp.weight"}) {
      total += bytes(b + n);
    }
    if (hp.n_expert > 0) {
      for (const char* n : {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"}) {
        total += bytes(b + n) / hp.n_expert * hp.n_expert_used;
      }
    }
  }
  return total;
}

std::string TypeSummary(const runtime::Model& m) {
  const auto* t = m.file().FindTensor("blk.0.ffn_up_exps.weight");
  if (!t) t = m.file().FindTensor("blk.0.ffn_up.weight");
  return t ? std::string(gguf::TypeName(t->type)) : "?";
}

}  // namespace

int RunBench(const BenchArgs& a) {
  if (a.n_prompt < 1 || a.n_gen < 1 || a.repetitions < 1 || a.threads.empty()) {
    std::fprintf(stderr, "error: -p, -n, -r must be >= 1 and -t must list at least one thread count\n");
    return 1;
  }
  runtime::LoadOptions load;
  load.pack_weights = a.repack;
  auto loaded = runtime::Model::Load(a.model, load);
  if (!loaded.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  const runtime::Model& m = **loaded;
  const runtime::HParams& hp = m.hparams();
  if (a.depth < 0 || static_cast<int64_t>(a.depth) + a.n_prompt + a.n_gen + 1 > hp.n_ctx_train) {
    std::fprintf(stderr, "error: -d + -p + -n exceed the model's context of %d (or -d < 0)\n", hp.n_ctx_train);
    return 1;
  }
  const kernels::CpuFeatures& cpu = kernels::GetCpuFeatures();
  const std::string backend = StrCat("CPU ", kernels::Active().name, a.repack ? "" : " unpacked");
  const std::string model_name = StrCat(hp.arch, hp.n_expert ? StrCat(" ", hp.n_expert, "x", hp.n_ff, " top-", hp.n_expert_used) : "", " ", TypeSummary(m));
  const double size_gib = m.file().size() / 1073741824.0;
  const double params_b = m.n_params() / 1e9;
  std::fprintf(stderr, "cpu: %s; avx2=%d avx512f=%d avx512vnni=%d avx512bf16=%d amx_int8=%d amx_bf16=%d; kernels: %s\n",
               cpu.brand.c_str(), cpu.avx2, cpu.avx512f, cpu.avx512vnni, cpu.avx512bf16, cpu.amx_int8, cpu.amx_bf16,
               kernels::Active().name);

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, hp.n_vocab - 1);
  runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, a.depth + a.n_prompt + a.n_gen + 1, 1);
  std::vector<float> logits;
  // The context both tests start from: `depth` tokens already in the cache
  // (positions past it are overwritten by each test), or one token for tg.
  auto fill_context = [&](int n) -> bool {
    if (!kv.Start(0).ok()) return false;
    for (int begin = 0; begin < n; begin += 512) {
      std::vector<runtime::BatchRow> rows;
      for (int i = begin; i < std::min(n, begin + 512); ++i) rows.push_back({token(rng), i, 0, i + 1 == n});
      if (!runtime::Forward(m, rows, kv, &logits).ok()) return false;
    }
    return true;
  };
  const std::string at_depth = a.depth > 0 ? StrCat(" @ d", a.depth) : "";
  nlohmann::json rows = nlohmann::json::array();
  struct Row {
    int threads;
    std::string test;
    Stats ts;
  };
  std::vector<Row> table;
  std::map<int, double> bandwidth;

  for (int threads : a.threads) {
    tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
    bandwidth[threads] = kernels::MeasureReadBandwidth();
    std::vector<double> pp, tg;
    for (int rep = -1; rep < a.repetitions; ++rep) {  // rep -1 warms up (page faults, caches)
      // Prompt processing: n_prompt tokens in one batch after `depth` of context.
      if (!fill_context(a.depth)) return 1;
      std::vector<runtime::BatchRow> batch(a.n_prompt);
      for (int i = 0; i < a.n_prompt; ++i) batch[i] = {token(rng), a.depth + i, 0, i + 1 == a.n_prompt};
      auto t = Clock::now();
      if (auto s = runtime::Forward(m, batch, kv, &logits); !s.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      const double pp_s = Seconds(t);
      // Generation: n_gen single-token steps after `depth` tokens of context
      // (at least one).
      const int context = std::max(1, a.depth);
      if (a.depth == 0 && !fill_context(context)) return 1;
      t = Clock::now();
      for (int i = 0; i < a.n_gen; ++i) {
        batch.assign(1, {token(rng), context + i, 0, true});
        if (!runtime::Forward(m, batch, kv, &logits).ok()) return 1;
      }
      const double tg_s = Seconds(t);
      if (rep >= 0) {
        pp.push_back(a.n_prompt / pp_s);
        tg.push_back(a.n_gen / tg_s);
      }
    }
    // Measured again after the runs and the higher figure kept: on a shared
    // machine a busy moment can halve one measurement (and double the fraction).
    bandwidth[threads] = std::max(bandwidth[threads], kernels::MeasureReadBandwidth());
    table.push_back({threads, StrCat("pp", a.n_prompt, at_depth), Summarise(pp)});
    table.push_back({threads, StrCat("tg", a.n_gen, at_depth), Summarise(tg)});
  }

  // Bytes one generated token reads: the active weights, and the K and V
  // (F32) of every earlier position in every layer, on average over the test.
  const uint64_t kv_read = static_cast<uint64_t>(hp.n_layer) * hp.kv_dim() * 2 * sizeof(float) *
                           static_cast<uint64_t>(std::max(1, a.depth) + a.n_gen / 2);
  const uint64_t active = ActiveBytesPerToken(m) + kv_read;
  if (a.json) {
    for (const Row& r : table) {
      rows.push_back({{"model", model_name}, {"size_bytes", m.file().size()}, {"params", m.n_params()},
                      {"backend", backend}, {"threads", r.threads}, {"test", r.test},
                      {"ts_mean", r.ts.mean}, {"ts_sd", r.ts.sd},
                      {"read_bandwidth_bytes_per_s", bandwidth[r.threads]},
                      {"tg_bound_ts", bandwidth[r.threads] / active}});
    }
    std::printf("%s\n", rows.dump(2).c_str());
  } else {
    std::printf("| model | size | params | backend | threads | test | t/s |\n");
    std::printf("| --- | ---: | ---: | --- | ---: | --- | ---: |\n");
    for (const Row& r : table) {
      std::printf("| %s | %.2f GiB | %.2f B | %s | %d | %s | %.2f ± %.2f |\n", model_name.c_str(), size_gib, params_b,
                  backend.c_str(), r.threads, r.test.c_str(), r.ts.mean, r.ts.sd);
    }
    std::printf("\nactive weights per generated token: %.1f MiB, KV cache read: %.1f MiB\n",
                (active - kv_read) / 1048576.0, kv_read / 1048576.0);
    for (const auto& [threads, bw] : bandwidth) {
      const double bound = bw / active;
      double tg = 0;
      for (const Row& r : table) {
        if (r.threads == threads && r.test[0] == 't') tg = r.ts.mean;
      }
      std::printf("threads %d: read bandwidth %.1f GB/s -> tg bound %.1f t/s; reached %.1f t/s = %.0f%% of the bound\n",
                  threads, bw / 1e9, bound, tg, 100 * tg / bound);
    }
  }
  return 0;
}

}  // namespace micromoe::cli
