// MoE-layer micro-benchmarks (the benchmark model's shape: hidden 1024,
// 8 experts of FFN 2816, top-2):
//   router/route/rows:R               Router::Route, F32 gate (logits + top-k + plan)
//   router/group/rows:R               RoutingPlan::Group alone (dispatch grouping)
//   executor/q8_0/rows:R/threads:T    ExpertExecutor::Run over LocalExperts with
//                                     Q8_0 weights (>= 256 MiB of layers rotated,
//                                     so decode streams weights from memory)
//   executor/trivial/...              the same with experts that copy their input:
//                                     the executor's own per-layer overhead
//   fanout/task_group|flow_graph|flow_graph_per_call/...
//                                     the fan-out/join alone with trivial work:
//                                     tbb::task_group (what the executor uses) vs a
//                                     prebuilt tbb::flow::graph vs one built per call
//   loop/team|parallel_for/gap_us:G/threads:T
//                                     one decode-style loop (a part of 10 us per thread)
//                                     after G us of serial work on this thread:
//                                     experts::WorkerTeam (what decode steps use) vs
//                                     tbb::parallel_for (oneTBB wakes its worker)
//   remote/...                        one layer round trip to `micromoe expert-node`
//                                     on loopback (from this thread, a new std::async
//                                     thread as the executor does, or a long-lived
//                                     thread) vs the same experts in-process, one
//                                     layer through the executor, and decode tokens/s
//                                     with half the experts remote (skipped with an
//                                     error when the node cannot start)

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>
#include <tbb/blocked_range.h>
#include <tbb/flow_graph.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_group.h>

#include "bench/bench_common.h"
#include "experts/expert.h"
#include "experts/local_expert.h"
#include "experts/placement.h"
#include "experts/worker_team.h"
#include "gguf/writer.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
#include "router/router.h"
#include "runtime/expert_executor.h"
#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"
#include "tests/child_process.h"
#include "tools/model_builder.h"

namespace micromoe::bench {
namespace {

using gguf::TensorType;

constexpr int64_t kDim = 1024, kFfn = 2816;
constexpr int kExperts = 8, kTopK = 2;
constexpr uint64_t kMinWorkingSet = 256ull << 20;

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// `count` routing plans of n_rows rows, each row on kTopK distinct random
// experts, grouped (as the router leaves them).
std::vector<router::RoutingPlan> RandomPlans(int n_rows, int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<router::RoutingPlan> plans(count);
  for (router::RoutingPlan& p : plans) {
    p.n_rows = n_rows;
    p.top_k = kTopK;
    p.n_experts = kExperts;
    for (int r = 0; r < n_rows; ++r) {
      const int a = static_cast<int>(rng() % kExperts);
      int b = static_cast<int>(rng() % (kExperts - 1));
      if (b >= a) ++b;
      p.experts.insert(p.experts.end(), {a, b});
      p.weights.insert(p.weights.end(), {0.6f, 0.4f});
    }
    p.Group();
  }
  return plans;
}

// ----------------------------------------------------------------- router --

void BM_Route(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0));
  const std::vector<float> gate = RandomFloats(kExperts * kDim, 1, 0.05f);
  router::Router router({TensorType::kF32, reinterpret_cast<const uint8_t*>(gate.data()), kExperts, kDim,
                         kDim * sizeof(float)},
                        {kExperts, kTopK});
  const std::vector<float> hidden = RandomFloats(rows * kDim, 2);
  router::RoutingPlan plan;
  for (auto _ : state) {
    router.Route(hidden.data(), kDim, rows, &plan);
    benchmark::DoNotOptimize(plan.group_rows.data());
  }
  state.SetItemsProcessed(state.iterations() * rows);  // rows routed
}

void BM_Group(benchmark::State& state) {
  router::RoutingPlan plan = RandomPlans(static_cast<int>(state.range(0)), 1, 3)[0];
  for (auto _ : state) {
    plan.Group();
    benchmark::DoNotOptimize(plan.group_rows.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// --------------------------------------------------------------- executor --

// An expert that copies its input: no arithmetic, so a layer's time is the
// executor's own (gather, scheduling, combine).
class CopyExpert final : public experts::Expert {
 public:
  absl::Status Forward(const float* in, int64_t n_rows, float* out) const override {
    std::copy_n(in, n_rows * kDim, out);
    return absl::OkStatus();
  }
  int64_t dim() const override { return kDim; }
};

// Layers of kExperts Q8_0 SwiGLU experts (copies of one random expert), at
// least kMinWorkingSet bytes in all.
class Q8Layers {
 public:
  Q8Layers() {
    const std::vector<float> f = RandomFloats(kFfn * kDim, 4, 0.05f);
    const std::vector<uint8_t> up = kernels::QuantizeTensor(TensorType::kQ8_0, f.data(), kFfn, kDim);
    const std::vector<uint8_t> down = kernels::QuantizeTensor(TensorType::kQ8_0, f.data(), kDim, kFfn);
    expert_bytes_ = 2 * up.size() + down.size();
    const int n_layers = static_cast<int>(std::max<uint64_t>(2, (kMinWorkingSet + kExperts * expert_bytes_ - 1) /
                                                                    (kExperts * expert_bytes_)));
    storage_.resize(static_cast<size_t>(n_layers) * kExperts * 3);
    layers_.resize(n_layers);
    size_t s = 0;
    for (int l = 0; l < n_layers; ++l) {
      for (int e = 0; e < kExperts; ++e) {
        storage_[s] = up;
        storage_[s + 1] = up;
        storage_[s + 2] = down;
        const uint64_t ffn_row = storage_[s].size() / kFfn, dim_row = storage_[s + 2].size() / kDim;
        experts_.push_back(std::make_unique<experts::LocalExpert>(
            kernels::MatrixView{TensorType::kQ8_0, storage_[s].data(), kFfn, kDim, ffn_row},
            kernels::MatrixView{TensorType::kQ8_0, storage_[s + 1].data(), kFfn, kDim, ffn_row},
            kernels::MatrixView{TensorType::kQ8_0, storage_[s + 2].data(), kDim, kFfn, dim_row}));
        layers_[l].push_back(experts_.back().get());
        s += 3;
      }
    }
  }
  const std::vector<std::vector<const experts::Expert*>>& layers() const { return layers_; }
  uint64_t expert_bytes() const { return expert_bytes_; }

 private:
  uint64_t expert_bytes_ = 0;
  std::vector<std::vector<uint8_t>> storage_;
  std::vector<std::unique_ptr<experts::Expert>> experts_;
  std::vector<std::vector<const experts::Expert*>> layers_;
};

void BM_ExecutorQ8(benchmark::State& state, Bandwidth bandwidth) {
  const int rows = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  static const Q8Layers layers;  // built on first use, shared by all executor runs
  const std::vector<router::RoutingPlan> plans = RandomPlans(rows, 16, 5);
  const std::vector<float> x = RandomFloats(rows * kDim, 6);
  std::vector<float> out(rows * kDim);
  uint64_t bytes = 0;
  size_t i = 0;
  const Stopwatch loop;
  for (auto _ : state) {
    const router::RoutingPlan& plan = plans[i % plans.size()];
    const auto& experts = layers.layers()[i % layers.layers().size()];
    if (auto s = runtime::ExpertExecutor::Run(plan, x.data(), kDim, 0, experts, out.data()); !s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
    for (int e = 0; e < kExperts; ++e) bytes += plan.rows_for(e) > 0 ? layers.expert_bytes() : 0;
    ++i;
  }
  if (state.iterations() > 0) ReportBytes(state, static_cast<double>(bytes) / state.iterations(), bandwidth.at(threads), loop);
  state.SetItemsProcessed(state.iterations() * rows);  // tokens through one MoE layer
  state.counters["layers"] = static_cast<double>(layers.layers().size());
}

void BM_ExecutorTrivial(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  const std::vector<CopyExpert> impl(kExperts);
  std::vector<const experts::Expert*> experts;
  for (const CopyExpert& e : impl) experts.push_back(&e);
  const std::vector<router::RoutingPlan> plans = RandomPlans(rows, 16, 5);
  const std::vector<float> x = RandomFloats(rows * kDim, 6);
  std::vector<float> out(rows * kDim);
  size_t i = 0;
  for (auto _ : state) {
    const absl::Status s = runtime::ExpertExecutor::Run(plans[i++ % plans.size()], x.data(), kDim, 0, experts, out.data());
    benchmark::DoNotOptimize(s.ok());
  }
  state.SetItemsProcessed(state.iterations() * rows);
}

// ------------------------------------------------ fan-out/join, trivial work --
// Each active expert copies its grouped rows (rows_for(e) x kDim floats), as
// CopyExpert does; no gather or combine, so only the scheduling differs.

struct FanOutWork {
  const router::RoutingPlan* plan = nullptr;
  const float* in = nullptr;
  float* out = nullptr;
  void Run(int e) const {
    const size_t begin = static_cast<size_t>(plan->group_begin[e]) * kDim;
    std::copy_n(in + begin, static_cast<size_t>(plan->rows_for(e)) * kDim, out + begin);
  }
};

void BM_FanOutTaskGroup(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  const std::vector<router::RoutingPlan> plans = RandomPlans(rows, 16, 5);
  const std::vector<float> in = RandomFloats(rows * kTopK * kDim, 6);
  std::vector<float> out(in.size());
  FanOutWork work{nullptr, in.data(), out.data()};
  std::vector<int> active;
  size_t i = 0;
  for (auto _ : state) {
    work.plan = &plans[i++ % plans.size()];
    active.clear();
    for (int e = 0; e < kExperts; ++e) {
      if (work.plan->rows_for(e) > 0) active.push_back(e);
    }
    // As the executor does: all but the last expert as tasks, the last on this thread.
    tbb::task_group tg;
    for (size_t k = 0; k + 1 < active.size(); ++k) tg.run([&work, e = active[k]] { work.Run(e); });
    if (!active.empty()) work.Run(active.back());
    tg.wait();
  }
  state.SetItemsProcessed(state.iterations() * rows);
}

// Spins for `us` microseconds: the serial work between two loops of a decode step.
void SerialWork(double us) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() < us) {
  }
}

// One loop of `threads` parts of 10 us each after gap_us of serial work, on
// a WorkerTeam (team) or as a tbb::parallel_for: the time above gap_us + 10
// is what the loop costs to start and finish.
void BM_LoopDispatch(benchmark::State& state, bool team) {
  const double gap_us = static_cast<double>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  auto part = [](int) { SerialWork(10); };
  std::optional<experts::WorkerTeam> workers;
  if (team) workers.emplace();
  for (auto _ : state) {
    SerialWork(gap_us);
    if (team) {
      workers->Run(threads, part);
    } else {
      tbb::parallel_for(tbb::blocked_range<int>(0, threads, 1), [&](const tbb::blocked_range<int>& r) {
        for (int p = r.begin(); p < r.end(); ++p) part(p);
      });
    }
  }
}

// One node per expert between a start broadcast and a join, built once; an
// expert with no rows in the current plan returns at once.
void BM_FanOutFlowGraph(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  const std::vector<router::RoutingPlan> plans = RandomPlans(rows, 16, 5);
  const std::vector<float> in = RandomFloats(rows * kTopK * kDim, 6);
  std::vector<float> out(in.size());
  FanOutWork work{nullptr, in.data(), out.data()};
  using tbb::flow::continue_msg;
  using Node = tbb::flow::continue_node<continue_msg>;
  tbb::flow::graph g;
  tbb::flow::broadcast_node<continue_msg> start(g);
  Node join(g, [](const continue_msg&) {});
  std::vector<std::unique_ptr<Node>> nodes;
  for (int e = 0; e < kExperts; ++e) {
    nodes.push_back(std::make_unique<Node>(g, [&work, e](const continue_msg&) {
      if (work.plan->rows_for(e) > 0) work.Run(e);
    }));
    tbb::flow::make_edge(start, *nodes.back());
    tbb::flow::make_edge(*nodes.back(), join);
  }
  size_t i = 0;
  for (auto _ : state) {
    work.plan = &plans[i++ % plans.size()];
    start.try_put(continue_msg());
    g.wait_for_all();
  }
  state.SetItemsProcessed(state.iterations() * rows);
}

// A graph of just the active experts, built for each call (what a per-plan
// graph costs when the routing changes every layer).
void BM_FanOutFlowGraphPerCall(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);
  const std::vector<router::RoutingPlan> plans = RandomPlans(rows, 16, 5);
  const std::vector<float> in = RandomFloats(rows * kTopK * kDim, 6);
  std::vector<float> out(in.size());
  FanOutWork work{nullptr, in.data(), out.data()};
  using tbb::flow::continue_msg;
  using Node = tbb::flow::continue_node<continue_msg>;
  size_t i = 0;
  for (auto _ : state) {
    work.plan = &plans[i++ % plans.size()];
    tbb::flow::graph g;
    tbb::flow::broadcast_node<continue_msg> start(g);
    Node join(g, [](const continue_msg&) {});
    std::vector<std::unique_ptr<Node>> nodes;
    for (int e = 0; e < kExperts; ++e) {
      if (work.plan->rows_for(e) == 0) continue;
      nodes.push_back(std::make_unique<Node>(g, [&work, e](const continue_msg&) { work.Run(e); }));
      tbb::flow::make_edge(start, *nodes.back());
      tbb::flow::make_edge(*nodes.back(), join);
    }
    start.try_put(continue_msg());
    g.wait_for_all();
  }
  state.SetItemsProcessed(state.iterations() * rows);
}

// ----------------------------------------------------------------- remote --

// A `micromoe expert-node` serving experts 2-3 of every layer of a small
// random model (hidden 1024, FFN 512, 4 experts top-2, 2 layers, Q8_0), 1
// thread, on a free loopback port; and the same model loaded here. Killed
// (and its files removed) on destruction; dies with this process.
class RemoteSetup {
 public:
  static constexpr int kLayers = 2, kModelExperts = 4, kFirstRemote = 2;

  RemoteSetup() {
    const std::string base = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/moe_bench_" +
                             std::to_string(::getpid());
    model_path_ = base + ".gguf";
    log_path_ = base + ".log";
    tools::TinyModelSpec spec;
    spec.n_embd = kDim;
    spec.n_layer = kLayers;
    spec.n_head = 16;
    spec.n_head_kv = 4;
    spec.n_ff = 512;
    spec.n_expert = kModelExperts;
    spec.n_expert_used = 2;
    spec.weight_type = TensorType::kQ8_0;
    spec.weight_scale = 0.05f;
    gguf::Writer w;
    tools::BuildTinyModel(spec, &w);
    if (absl::Status s = w.WriteFile(model_path_); !s.ok()) {
      error_ = "cannot write the model: " + std::string(s.message());
      return;
    }
    auto model = runtime::Model::Load(model_path_, runtime::LoadOptions{.load_tokenizer = false});
    if (!model.ok()) {
      error_ = "cannot load the model: " + std::string(model.status().message());
      return;
    }
    model_ = std::move(*model);
    node_ = testing_support::ChildProcess::Start(
        MICROMOE_BINARY, {"expert-node", "-m", model_path_, "--experts", "*:2-3", "--listen", "127.0.0.1:0", "-t", "1"},
        log_path_, &error_);
    if (!node_) return;
    experts::Placement placement;
    for (int l = 0; l < kLayers; ++l) {
      for (int e = kFirstRemote; e < kModelExperts; ++e) placement.experts.push_back({l, e, {node_->address()}});
    }
    auto remote = experts::RemoteExperts::Connect(placement, kDim);
    if (!remote.ok()) {
      error_ = "cannot connect: " + std::string(remote.status().message());
      return;
    }
    remote_ = std::move(*remote);
  }

  ~RemoteSetup() {
    if (model_) SetRemote(false);
    remote_.reset();
    node_.reset();
    std::remove(model_path_.c_str());
  }

  // Empty when the node is up and connected.
  const std::string& error() const { return error_; }
  runtime::Model& model() { return *model_; }
  // The group of the remote experts (one node: one group).
  experts::ExpertGroup* group() const { return remote_->experts()[0].impl->group(); }
  // Installs the remote experts in the model (or puts the local ones back).
  void SetRemote(bool on) {
    if (!remote_) return;
    for (const auto& e : remote_->experts()) {
      model_->SetExpert(e.layer, e.expert, on ? e.impl : model_->layers()[e.layer].local_experts[e.expert].get());
    }
  }

 private:
  std::string model_path_, log_path_, error_;
  std::unique_ptr<testing_support::ChildProcess> node_;
  std::unique_ptr<runtime::Model> model_;
  std::unique_ptr<experts::RemoteExperts> remote_;
};

// Owned by main (so the node and the gRPC channels go before static
// destruction); built by the first remote benchmark that runs.
std::unique_ptr<RemoteSetup>* g_remote = nullptr;

RemoteSetup* Remote(benchmark::State& state) {
  if (!*g_remote) *g_remote = std::make_unique<RemoteSetup>();
  if (!(*g_remote)->error().empty()) {
    state.SkipWithError((*g_remote)->error().c_str());
    return nullptr;
  }
  return g_remote->get();
}

enum class Where { kLocal, kRemote, kRemoteAsync, kRemoteWorker };

// One long-lived thread that runs one job at a time for the caller (which
// waits): a hand-off to an existing thread, without creating one per call.
class Worker {
 public:
  Worker() : thread_([this] { Loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  absl::Status Run(std::function<absl::Status()> job) {
    std::unique_lock<std::mutex> lock(mu_);
    job_ = std::move(job);
    done_ = false;
    cv_.notify_all();
    cv_.wait(lock, [&] { return done_; });
    return result_;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || job_ != nullptr; });
      if (stop_) return;
      std::function<absl::Status()> job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      absl::Status result = job();
      lock.lock();
      result_ = std::move(result);
      done_ = true;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<absl::Status()> job_;
  absl::Status result_;
  bool done_ = false, stop_ = false;
  std::thread thread_;
};

// One layer's calls for experts 2 and 3, `rows` rows each: on the in-process
// copies, or over the network (one ForwardBatch = one round trip) from this
// thread, from a new std::async thread per call (as the executor issues it),
// or handed to one long-lived thread.
void BM_RemoteExperts(benchmark::State& state, Where where) {
  tbb::global_control one(tbb::global_control::max_allowed_parallelism, 1);
  RemoteSetup* r = Remote(state);
  if (r == nullptr) return;
  const int rows = static_cast<int>(state.range(0));
  const std::vector<float> in = RandomFloats(rows * kDim, 7);
  std::vector<float> out2(in.size()), out3(in.size());
  const std::vector<experts::ExpertCall> calls = {{2, in.data(), rows, out2.data()}, {3, in.data(), rows, out3.data()}};
  const auto& local = r->model().layers()[0].local_experts;
  Worker worker;
  for (auto _ : state) {
    absl::Status s;
    if (where == Where::kRemote) {
      s = r->group()->ForwardBatch(0, calls);
    } else if (where == Where::kRemoteAsync) {
      s = std::async(std::launch::async, [&] { return r->group()->ForwardBatch(0, calls); }).get();
    } else if (where == Where::kRemoteWorker) {
      s = worker.Run([&] { return r->group()->ForwardBatch(0, calls); });
    } else {
      s = local[2]->Forward(in.data(), rows, out2.data());
      if (s.ok()) s = local[3]->Forward(in.data(), rows, out3.data());
    }
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * rows);
}

// ExpertExecutor::Run of layer 0 with the row(s) routed to experts 2 and 3,
// local or remote (the remote path adds the executor's per-group thread).
void BM_RemoteLayer(benchmark::State& state, bool remote) {
  tbb::global_control one(tbb::global_control::max_allowed_parallelism, 1);
  RemoteSetup* r = Remote(state);
  if (r == nullptr) return;
  const int rows = static_cast<int>(state.range(0));
  router::RoutingPlan plan;
  plan.n_rows = rows;
  plan.top_k = 2;
  plan.n_experts = RemoteSetup::kModelExperts;
  for (int i = 0; i < rows; ++i) {
    plan.experts.insert(plan.experts.end(), {2, 3});
    plan.weights.insert(plan.weights.end(), {0.6f, 0.4f});
  }
  plan.Group();
  r->SetRemote(remote);
  std::vector<const experts::Expert*> experts;
  for (int e = 0; e < RemoteSetup::kModelExperts; ++e) experts.push_back(r->model().experts(0)[e]);
  const std::vector<float> x = RandomFloats(rows * kDim, 8);
  std::vector<float> out(x.size());
  for (auto _ : state) {
    if (auto s = runtime::ExpertExecutor::Run(plan, x.data(), kDim, 0, experts, out.data()); !s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
  }
  r->SetRemote(false);
  state.SetItemsProcessed(state.iterations() * rows);
}

// Decode, one token per iteration (2 layers, top-2 of 4 experts), all local or
// with experts 2-3 of every layer on the node; 1 thread in each process.
void BM_RemoteDecode(benchmark::State& state, bool remote) {
  tbb::global_control one(tbb::global_control::max_allowed_parallelism, 1);
  RemoteSetup* r = Remote(state);
  if (r == nullptr) return;
  runtime::Model& m = r->model();
  const runtime::HParams& hp = m.hparams();
  r->SetRemote(remote);
  const int n_ctx = std::min(hp.n_ctx_train, 128);
  runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, n_ctx, 1);
  (void)kv.Start(0);
  std::vector<float> logits;
  int pos = 0;
  for (auto _ : state) {
    if (pos == n_ctx) {
      state.PauseTiming();
      (void)kv.Start(0);
      pos = 0;
      state.ResumeTiming();
    }
    const int32_t token = 3 + (pos * 37) % (hp.n_vocab - 3);
    if (auto s = runtime::Forward(m, {{token, pos, 0, true}}, kv, &logits); !s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
    ++pos;
  }
  r->SetRemote(false);
  state.SetItemsProcessed(state.iterations());  // tokens
}

void RegisterAll(const Bandwidth& bw) {
  benchmark::RegisterBenchmark("router/route", BM_Route)->ArgName("rows")->Arg(1)->Arg(128);
  benchmark::RegisterBenchmark("router/group", BM_Group)->ArgName("rows")->Arg(1)->Arg(128);

  auto rows_threads = [](benchmark::internal::Benchmark* b) {
    b->ArgNames({"rows", "threads"})->UseRealTime();
    for (int rows : {1, 128}) {
      for (int t = 1; t <= MaxBenchThreads(); ++t) b->Args({rows, t});
    }
  };
  benchmark::RegisterBenchmark("executor/q8_0", BM_ExecutorQ8, bw)->Apply(rows_threads)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("executor/trivial", BM_ExecutorTrivial)->Apply(rows_threads)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("fanout/task_group", BM_FanOutTaskGroup)->Apply(rows_threads)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("fanout/flow_graph", BM_FanOutFlowGraph)->Apply(rows_threads)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("fanout/flow_graph_per_call", BM_FanOutFlowGraphPerCall)
      ->Apply(rows_threads)
      ->Unit(benchmark::kMicrosecond);

  for (bool team : {true, false}) {
    auto* b = benchmark::RegisterBenchmark(team ? "loop/team" : "loop/parallel_for", BM_LoopDispatch, team);
    b->ArgNames({"gap_us", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
    for (int gap : {0, 5, 50}) {
      for (int t = 1; t <= MaxBenchThreads(); ++t) b->Args({gap, t});
    }
  }
  for (auto [where, name] : {std::pair{Where::kLocal, "local"}, std::pair{Where::kRemote, "remote"},
                              std::pair{Where::kRemoteAsync, "remote_async"},
                              std::pair{Where::kRemoteWorker, "remote_worker_thread"}}) {
    benchmark::RegisterBenchmark((std::string("remote/experts_2_3/") + name).c_str(), BM_RemoteExperts, where)
        ->ArgName("rows")->Arg(1)->Arg(16)->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
  for (bool remote : {false, true}) {
    benchmark::RegisterBenchmark(remote ? "remote/layer/remote" : "remote/layer/local", BM_RemoteLayer, remote)
        ->ArgName("rows")->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
  for (bool remote : {false, true}) {
    benchmark::RegisterBenchmark(remote ? "remote/decode/half_remote" : "remote/decode/all_local", BM_RemoteDecode,
                                 remote)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace
}  // namespace micromoe::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  using namespace micromoe::bench;
  std::unique_ptr<RemoteSetup> remote;
  g_remote = &remote;
  std::fprintf(stderr, "moe layer: hidden %lld, %d experts of FFN %lld, top-%d; expert node: %s\n",
               static_cast<long long>(kDim), kExperts, static_cast<long long>(kFfn), kTopK, MICROMOE_BINARY);
  RegisterAll(DescribeMachineAndMeasure(MaxBenchThreads()));
  benchmark::RunSpecifiedBenchmarks();
  remote.reset();  // stop the node and close the channels before exit
  benchmark::Shutdown();
  return 0;
}
