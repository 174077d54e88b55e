// Remote experts: expert specs and placement files, and a router (this test
// process) running the model with experts on `micromoe expert-node` processes:
// bit-identical to all-local for F32 weights, the failure policies when a node
// dies, replicas, a node that comes back, and a node's answers to requests it
// cannot run.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "tests/child_process.h"
#include <tbb/global_control.h>

#include "experts/placement.h"
#include "experts/remote_expert.h"
#include "gguf/writer.h"
#include "micromoe.grpc.pb.h"
#include "runtime/forward.h"
#include "runtime/model.h"
#include "tools/model_builder.h"

namespace micromoe {
namespace {

using Clock = std::chrono::steady_clock;
using experts::ParseExpertSpec;
using experts::ParsePlacementFile;
using experts::Placement;
using experts::RemoteExperts;

double MsSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::string Scratch(const std::string& name) {
  return ::testing::TempDir() + "/remote_" + std::to_string(::getpid()) + "_" + name;
}

// Scratch files, removed when the test program ends.
class ScratchFiles : public ::testing::Environment {
 public:
  static std::vector<std::string>& paths() {
    static std::vector<std::string> p;
    return p;
  }
  void TearDown() override {
    for (const auto& p : paths()) std::remove(p.c_str());
  }
};
const auto* const kScratchFiles = ::testing::AddGlobalTestEnvironment(new ScratchFiles);

std::string WriteText(const std::string& name, const std::string& text) {
  const std::string path = Scratch(name);
  std::ofstream(path, std::ios::binary) << text;
  ScratchFiles::paths().push_back(path);
  return path;
}

std::string WriteModel(const std::string& name, const tools::TinyModelSpec& spec = {}) {
  gguf::Writer w;
  tools::BuildTinyModel(spec, &w);
  const std::string path = Scratch(name + ".gguf");
  EXPECT_TRUE(w.WriteFile(path).ok());
  return path;
}

// ------------------------------------------------------------ expert specs --

TEST(ExpertSpec, ParsesRangesStarsAndLists) {
  auto all = ParseExpertSpec("0-1:0-3", 2, 4);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 8u);
  auto star = ParseExpertSpec("*:1", 3, 4);
  ASSERT_TRUE(star.ok()) << star.status();
  EXPECT_EQ(*star, (std::vector<std::pair<int, int>>{{0, 1}, {1, 1}, {2, 1}}));
  auto list = ParseExpertSpec(" 1:1 , 0:2,0:2-3,0:2 ", 2, 4);  // sorted, without duplicates
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(*list, (std::vector<std::pair<int, int>>{{0, 2}, {0, 3}, {1, 1}}));
  auto everything = ParseExpertSpec("*:*", 2, 3);
  ASSERT_TRUE(everything.ok());
  EXPECT_EQ(everything->size(), 6u);
}

TEST(ExpertSpec, RejectsBadInputWithAClearMessage) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty expert spec"},
      {"0-1", "expected LAYERS:EXPERTS"},
      {"0:1:2", "expected LAYERS:EXPERTS"},
      {"a:1", "bad layer 'a'"},
      {"0:x", "bad expert 'x'"},
      {"2:0", "outside the model (layers 0-1)"},
      {"0:4", "outside the model (experts 0-3)"},
      {"0:1-9", "outside the model (experts 0-3)"},
      {"1-0:0", "1 > 0"},
      {"0:0,", "empty item"},
      {"-1:0", "bad layer"},
      {"99999999999:0", "bad layer"},
      {":0", "empty layer range"},
  };
  for (const auto& [spec, want] : cases) {
    auto r = ParseExpertSpec(spec, 2, 4);
    ASSERT_FALSE(r.ok()) << "'" << spec << "' was accepted";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(r.status().message()).find(want), std::string::npos)
        << "'" << spec << "': " << r.status().message();
  }
}

// --------------------------------------------------------- placement files --

TEST(PlacementFile, ParsesOptionsEntriesAndReplicas) {
  const std::string path = WriteText("good.json", R"({
    "deadline_ms": 500, "retry_after_ms": 250,
    "experts": [
      {"layers": "0-1", "experts": "0-1", "endpoints": ["127.0.0.1:50061", "127.0.0.1:50071"]},
      {"layers": 1, "experts": "*", "endpoints": ["localhost:50062"]}
    ]})");
  // Entry 1 overlaps entry 0 on layer 1 experts 0-1: rejected; fix it.
  auto bad = ParsePlacementFile(path, 2, 4);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("experts[1]: layer 1 expert 0 is already placed by experts[0]"),
            std::string::npos)
      << bad.status();

  const std::string good = WriteText("good2.json", R"({
    "deadline_ms": 500, "retry_after_ms": 250,
    "experts": [
      {"layers": "0-1", "experts": "0-1", "endpoints": ["127.0.0.1:50061", "127.0.0.1:50071"]},
      {"layers": 1, "experts": "2-3", "endpoints": ["localhost:50062"]}
    ]})");
  auto p = ParsePlacementFile(good, 2, 4);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->options.deadline_ms, 500);
  EXPECT_EQ(p->options.retry_after_ms, 250);
  ASSERT_EQ(p->experts.size(), 6u);
  EXPECT_EQ(p->experts[0].layer, 0);
  EXPECT_EQ(p->experts[0].expert, 0);
  EXPECT_EQ(p->experts[0].endpoints, (std::vector<std::string>{"127.0.0.1:50061", "127.0.0.1:50071"}));
  EXPECT_EQ(p->experts[5].layer, 1);
  EXPECT_EQ(p->experts[5].expert, 3);
  EXPECT_EQ(p->experts[5].endpoints, (std::vector<std::string>{"localhost:50062"}));

  auto defaults = ParsePlacementFile(WriteText("defaults.json", R"({"experts": []})"), 2, 4);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->options.deadline_ms, experts::PlacementOptions{}.deadline_ms);
  EXPECT_TRUE(defaults->experts.empty());
}

TEST(PlacementFile, RejectsBadFilesNamingEntryAndField) {
  const std::string ok_entry = R"({"layers": "0", "experts": "0", "endpoints": ["h:1"]})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "not valid JSON"},
      {"[]", "expected a JSON object"},
      {R"({"experts": [], "deadline": 3})", "unknown key \"deadline\""},
      {R"({"deadline_ms": 0, "experts": []})", "deadline_ms: 0 is outside"},
      {R"({"deadline_ms": "5", "experts": []})", "deadline_ms: expected an integer"},
      {R"({"retry_after_ms": -1, "experts": []})", "retry_after_ms: -1 is outside"},
      {R"({})", "\"experts\" must be an array"},
      {R"({"experts": [3]})", "experts[0]: expected an object"},
      {R"({"experts": [{"layers": "0", "experts": "0"}]})", "experts[0].endpoints: missing"},
      {R"({"experts": [)" + ok_entry + R"(, {"layers": "0-2", "experts": "1", "endpoints": ["h:1"]}]})",
       "experts[1].layers: layer range '0-2' is outside the model (layers 0-1)"},
      {R"({"experts": [{"layers": 0, "experts": 4, "endpoints": ["h:1"]}]})",
       "experts[0].experts: expert 4 is outside the model"},
      {R"({"experts": [{"layers": -1, "experts": 0, "endpoints": ["h:1"]}]})", "experts[0].layers: expected"},
      {R"({"experts": [{"layers": "0", "experts": "0", "endpoints": []}]})", "experts[0].endpoints: expected a non-empty"},
      {R"({"experts": [{"layers": "0", "experts": "0", "endpoints": ["nohost"]}]})",
       "experts[0].endpoints[0]: endpoint 'nohost' has no port"},
      {R"({"experts": [{"layers": "0", "experts": "0", "endpoints": ["h:1", "h:1"]}]})",
       "experts[0].endpoints[1]: 'h:1' is listed twice"},
      {R"({"experts": [{"layers": "0", "experts": "0", "endpoints": [7]}]})", "experts[0].endpoints[0]: expected a string"},
      {R"({"experts": [{"layers": "0", "experts": "0", "endpoints": ["h:1"], "weight": 2}]})",
       "experts[0]: unknown key \"weight\""},
      {R"({"experts": [)" + ok_entry + "," + ok_entry + "]}", "already placed by experts[0]"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    auto r = ParsePlacementFile(WriteText("bad" + std::to_string(i) + ".json", cases[i].first), 2, 4);
    ASSERT_FALSE(r.ok()) << cases[i].first;
    EXPECT_NE(std::string(r.status().message()).find(cases[i].second), std::string::npos)
        << cases[i].first << "\n -> " << r.status().message();
  }
  // Bounded: larger than 1 MiB is rejected before parsing; a missing file is NOT_FOUND.
  auto big = ParsePlacementFile(WriteText("big.json", std::string(2 << 20, ' ')), 2, 4);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(std::string(big.status().message()).find("larger than 1 MiB"), std::string::npos);
  EXPECT_EQ(ParsePlacementFile(Scratch("missing.json"), 2, 4).status().code(), absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------ expert nodes --

// A `micromoe expert-node` child process (see child_process.h).
using Node = testing_support::ChildProcess;

std::unique_ptr<Node> StartNode(const std::string& model, const std::string& spec,
                                const std::string& listen = "127.0.0.1:0") {
  static int counter = 0;
  std::string error;
  auto node = Node::Start(MICROMOE_BINARY,
                          {"expert-node", "-m", model, "--experts", spec, "--listen", listen, "-t", "1"},
                          Scratch("node" + std::to_string(++counter) + ".log"), &error);
  if (!node) ADD_FAILURE() << error;
  return node;
}

// Experts [first, last] of every layer on `endpoints`.
void Place(Placement* p, int n_layer, int first, int last, const std::vector<std::string>& endpoints) {
  for (int l = 0; l < n_layer; ++l) {
    for (int e = first; e <= last; ++e) p->experts.push_back({l, e, endpoints});
  }
}

// The model (F32, 2 layers x 4 experts, top-2) shared by the tests below, with
// its all-local logits for one batch as the reference.
class RemoteExpertsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tools::TinyModelSpec spec;
    spec.seed = 7;
    model_path_ = new std::string(WriteModel("model", spec));
  }
  static void TearDownTestSuite() {
    std::remove(model_path_->c_str());
    delete model_path_;
  }

  void SetUp() override {
    auto m = runtime::Model::Load(*model_path_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    // Two sequences of 6 tokens in one batch: every expert gets several rows.
    std::mt19937 rng(3);
    std::uniform_int_distribution<int> tok(3, model_->hparams().n_vocab - 1);
    for (int s = 0; s < 2; ++s) {
      for (int p = 0; p < 6; ++p) rows_.push_back({tok(rng), p, s, true});
    }
    ASSERT_TRUE(RunForward({}, &local_logits_).ok());
  }

  void TearDown() override {
    // Put the local experts back before the remote ones go away.
    const auto& hp = model_->hparams();
    for (int l = 0; l < hp.n_layer; ++l) {
      for (int e = 0; e < hp.n_expert; ++e) model_->SetExpert(l, e, model_->layers()[l].local_experts[e].get());
    }
  }

  absl::Status RunForward(runtime::ForwardOptions options, std::vector<float>* logits,
                          runtime::ForwardReport* report = nullptr) {
    const auto& hp = model_->hparams();
    runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, 16, 2);
    for (int s = 0; s < 2; ++s) {
      if (auto st = kv.Start(s); !st.ok()) return st;
    }
    logits->clear();
    return runtime::Forward(*model_, rows_, kv, logits, options, report);
  }

  std::unique_ptr<RemoteExperts> Install(const Placement& p) {
    auto r = RemoteExperts::Connect(p, model_->hparams().n_embd);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return nullptr;
    for (const auto& e : (*r)->experts()) model_->SetExpert(e.layer, e.expert, e.impl);
    return std::move(*r);
  }

  void ExpectLocalLogits(const std::vector<float>& logits) {
    ASSERT_EQ(logits.size(), local_logits_.size());
    size_t differ = 0;
    for (size_t i = 0; i < logits.size(); ++i) differ += logits[i] != local_logits_[i];
    EXPECT_EQ(differ, 0u) << "of " << logits.size() << " logits differ from all-local";
  }

  static std::string* model_path_;
  std::unique_ptr<runtime::Model> model_;
  std::vector<runtime::BatchRow> rows_;
  std::vector<float> local_logits_;
};

std::string* RemoteExpertsTest::model_path_ = nullptr;

TEST_F(RemoteExpertsTest, TwoNodesGiveBitIdenticalLogits) {
  auto a = StartNode(*model_path_, "*:0-1");
  auto b = StartNode(*model_path_, "*:2-3");
  ASSERT_TRUE(a && b);
  Placement p;
  p.options.deadline_ms = 2000;
  Place(&p, 2, 0, 1, {a->address()});
  Place(&p, 2, 2, 3, {b->address()});
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  EXPECT_EQ(remote->experts().size(), 8u);
  EXPECT_TRUE(model_->experts(0)[0]->is_remote());
  // Experts on one node share one group (one call per node per layer).
  EXPECT_EQ(model_->experts(0)[0]->group(), model_->experts(1)[1]->group());
  EXPECT_NE(model_->experts(0)[0]->group(), model_->experts(0)[2]->group());

  for (int round = 0; round < 3; ++round) {  // the streams are reused
    std::vector<float> logits;
    runtime::ForwardReport report;
    ASSERT_TRUE(RunForward({}, &logits, &report).ok());
    EXPECT_TRUE(report.dropped.empty());
    ExpectLocalLogits(logits);
  }
  remote.reset();
  TearDown();
  EXPECT_TRUE(a->Terminate(5000)) << "graceful shutdown:\n" << a->log();
  EXPECT_NE(a->log().find("stopped"), std::string::npos) << a->log();
}

TEST_F(RemoteExpertsTest, ConcurrentForwardPassesShareTheNodes) {
  auto a = StartNode(*model_path_, "*:*");
  ASSERT_TRUE(a);
  Placement p;
  Place(&p, 2, 1, 3, {a->address()});
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, -1);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      int bad = 0;
      for (int i = 0; i < 5; ++i) {
        std::vector<float> logits;
        if (!RunForward({}, &logits).ok() || logits != local_logits_) ++bad;
      }
      mismatches[t] = bad;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST_F(RemoteExpertsTest, KilledNodeFailsOrDegradesWithinTheDeadline) {
  auto a = StartNode(*model_path_, "*:0-1");
  auto b = StartNode(*model_path_, "*:2-3");
  ASSERT_TRUE(a && b);
  Placement p;
  p.options.deadline_ms = 1000;
  p.options.retry_after_ms = 5000;  // B stays down for the whole test
  Place(&p, 2, 0, 1, {a->address()});
  Place(&p, 2, 2, 3, {b->address()});
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  std::vector<float> logits;
  ASSERT_TRUE(RunForward({}, &logits).ok());  // streams open to both nodes
  b->Kill();

  Clock::time_point t = Clock::now();
  absl::Status fail = RunForward({runtime::ExpertFailurePolicy::kFail}, &logits);
  EXPECT_EQ(fail.code(), absl::StatusCode::kUnavailable) << fail;
  EXPECT_NE(std::string(fail.message()).find(b->address()), std::string::npos) << fail;
  EXPECT_LT(MsSince(t), p.options.deadline_ms + 500.0);

  t = Clock::now();
  runtime::ForwardReport report;
  ASSERT_TRUE(RunForward({runtime::ExpertFailurePolicy::kDegrade}, &logits, &report).ok());
  EXPECT_LT(MsSince(t), 200.0) << "the dead node is in back-off: no waiting";
  ASSERT_FALSE(report.dropped.empty());
  std::vector<bool> layer_seen(2, false);
  for (const auto& d : report.dropped) {
    EXPECT_TRUE(d.expert == 2 || d.expert == 3) << "dropped expert " << d.expert << " lives on the live node";
    EXPECT_FALSE(d.rows.empty());
    for (int r : d.rows) EXPECT_TRUE(r >= 0 && r < static_cast<int>(rows_.size()));
    layer_seen[d.layer] = true;
  }
  EXPECT_TRUE(layer_seen[0] && layer_seen[1]);
  ASSERT_EQ(logits.size(), local_logits_.size());
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  EXPECT_NE(logits, local_logits_);
}

TEST_F(RemoteExpertsTest, ProbingADeadNodeAfterItsBackOffDoesNotWait) {
  auto a = StartNode(*model_path_, "*:2-3");
  ASSERT_TRUE(a);
  Placement p;
  p.options.deadline_ms = 2000;
  p.options.retry_after_ms = 100;
  Place(&p, 2, 2, 3, {a->address()});
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  std::vector<float> logits;
  ASSERT_TRUE(RunForward({}, &logits).ok());
  a->Kill();
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // past the back-off: a real probe
    const Clock::time_point t = Clock::now();
    runtime::ForwardReport report;
    ASSERT_TRUE(RunForward({runtime::ExpertFailurePolicy::kDegrade}, &logits, &report).ok());
    EXPECT_FALSE(report.dropped.empty());
    EXPECT_LT(MsSince(t), 100.0) << "probe " << i;
  }
}

TEST_F(RemoteExpertsTest, HungNodeTimesOutAtTheDeadlineAndRecovers) {
  auto a = StartNode(*model_path_, "*:*");
  ASSERT_TRUE(a);
  Placement p;
  p.options.deadline_ms = 300;
  p.options.retry_after_ms = 300;
  Place(&p, 2, 0, 3, {a->address()});
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  std::vector<float> logits;
  ASSERT_TRUE(RunForward({}, &logits).ok());
  // A stopped process keeps its sockets open: only the deadline can tell.
  ASSERT_TRUE(a->Pause()) << "the node did not stop";
  Clock::time_point t = Clock::now();
  const absl::Status s = RunForward({runtime::ExpertFailurePolicy::kFail}, &logits);
  const double ms = MsSince(t);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(std::string(s.message()).find("DEADLINE_EXCEEDED"), std::string::npos) << s;
  EXPECT_GE(ms, p.options.deadline_ms - 5.0);
  EXPECT_LT(ms, p.options.deadline_ms + 400.0);
  a->Resume();
  std::this_thread::sleep_for(std::chrono::milliseconds(p.options.retry_after_ms + 50));
  runtime::ForwardReport report;
  ASSERT_TRUE(RunForward({runtime::ExpertFailurePolicy::kDegrade}, &logits, &report).ok());
  EXPECT_TRUE(report.dropped.empty());
  ExpectLocalLogits(logits);
}

TEST_F(RemoteExpertsTest, ReplicaServesWhenThePrimaryDies) {
  auto primary = StartNode(*model_path_, "*:2-3");
  auto replica = StartNode(*model_path_, "*:2-3");
  ASSERT_TRUE(primary && replica);
  Placement p;
  p.options.retry_after_ms = 5000;
  Place(&p, 2, 2, 3, {primary->address(), replica->address()});  // experts 0-1 stay local
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  std::vector<float> logits;
  ASSERT_TRUE(RunForward({}, &logits).ok());
  ExpectLocalLogits(logits);
  primary->Kill();
  for (int i = 0; i < 3; ++i) {
    const Clock::time_point t = Clock::now();
    runtime::ForwardReport report;
    ASSERT_TRUE(RunForward({runtime::ExpertFailurePolicy::kFail}, &logits, &report).ok());
    EXPECT_TRUE(report.dropped.empty());
    ExpectLocalLogits(logits);
    EXPECT_LT(MsSince(t), 1000.0);
  }
}

TEST_F(RemoteExpertsTest, RestartedNodeIsUsedAgainAfterRetryAfter) {
  auto a = StartNode(*model_path_, "*:*");
  ASSERT_TRUE(a);
  const int port = a->port();
  Placement p;
  p.options.deadline_ms = 1000;
  p.options.retry_after_ms = 300;
  Place(&p, 2, 0, 3, {a->address()});
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  std::vector<float> logits;
  ASSERT_TRUE(RunForward({}, &logits).ok());
  a->Kill();
  runtime::ForwardReport report;
  ASSERT_TRUE(RunForward({runtime::ExpertFailurePolicy::kDegrade}, &logits, &report).ok());
  EXPECT_FALSE(report.dropped.empty());

  auto again = StartNode(*model_path_, "*:*", "127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(again);
  const Clock::time_point restarted = Clock::now();
  bool recovered = false;
  while (MsSince(restarted) < 5000) {
    report = {};
    ASSERT_TRUE(RunForward({runtime::ExpertFailurePolicy::kDegrade}, &logits, &report).ok());
    if (report.dropped.empty()) {
      recovered = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(recovered) << "the restarted node was not used again within 5 s";
  const double ms = MsSince(restarted);
  std::printf("[ metric   ] restarted node used again after %.0f ms (retry_after_ms %d)\n", ms,
              p.options.retry_after_ms);
  EXPECT_LT(ms, 3.0 * p.options.retry_after_ms + 500);
  ExpectLocalLogits(logits);
}

TEST_F(RemoteExpertsTest, PlacementErrorIsNotFoundNotADroppedExpert) {
  auto a = StartNode(*model_path_, "*:0-1");
  ASSERT_TRUE(a);
  Placement p;
  Place(&p, 2, 3, 3, {a->address()});  // the node does not hold expert 3
  auto remote = Install(p);
  ASSERT_TRUE(remote);
  std::vector<float> in(model_->hparams().n_embd, 0.5f), out(in.size());
  const absl::Status s = model_->experts(0)[3]->Forward(in.data(), 1, out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(std::string(s.message()).find("layer 0 expert 3 is not held"), std::string::npos) << s;
  std::vector<float> logits;
  runtime::ForwardReport report;
  EXPECT_EQ(RunForward({runtime::ExpertFailurePolicy::kDegrade}, &logits, &report).code(),
            absl::StatusCode::kNotFound);
}

// The node's answers to raw ExpertHost requests.
TEST_F(RemoteExpertsTest, NodeValidatesRequestsAndListsItsExperts) {
  auto a = StartNode(*model_path_, "0:1,1:0-1");
  ASSERT_TRUE(a);
  auto channel = grpc::CreateChannel(a->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::ExpertHost::NewStub(channel);
  const int dim = model_->hparams().n_embd;
  auto call = [&](const v1::ForwardRequest& req, v1::ForwardResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return stub->Forward(&ctx, req, resp);
  };
  auto request = [&](uint32_t layer, uint32_t expert, uint32_t n_rows, size_t bytes) {
    v1::ForwardRequest req;
    req.set_request_id(9);
    req.set_layer(layer);
    req.set_dim(dim);
    auto* e = req.add_experts();
    e->set_expert(expert);
    e->set_n_rows(n_rows);
    e->set_rows(std::string(bytes, '\0'));
    return req;
  };
  v1::ForwardResponse resp;
  const size_t row = dim * sizeof(float);
  grpc::Status s = call(request(1, 1, 2, 2 * row), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.experts_size(), 1);
  EXPECT_EQ(resp.request_id(), 9u);
  EXPECT_EQ(resp.experts(0).rows().size(), 2 * row);

  struct Bad {
    v1::ForwardRequest req;
    grpc::StatusCode code;
    std::string text;
  };
  std::vector<Bad> bad = {
      {request(0, 0, 1, row), grpc::StatusCode::NOT_FOUND, "layer 0 expert 0 is not held by this node"},
      {request(1, 1, 2, 2 * row - 1), grpc::StatusCode::INVALID_ARGUMENT, "need 512 bytes, got 511"},
      {request(1, 1, 70000, 0), grpc::StatusCode::INVALID_ARGUMENT, "above the limit of 65536"},
      {request(1, 1, 0xFFFFFFFFu, row), grpc::StatusCode::INVALID_ARGUMENT, "above the limit"},
      {request(2, 0, 1, row), grpc::StatusCode::INVALID_ARGUMENT, "layer 2 is outside the model"},
      {request(1, 4, 1, row), grpc::StatusCode::INVALID_ARGUMENT, "expert 4 is outside the model"},
  };
  bad.push_back({request(1, 1, 1, row), grpc::StatusCode::INVALID_ARGUMENT, "dim 63 does not match"});
  bad.back().req.set_dim(dim - 1);
  bad.push_back({request(1, 1, 1, row), grpc::StatusCode::INVALID_ARGUMENT, "unknown dtype 7"});
  bad.back().req.set_dtype(static_cast<v1::DType>(7));
  for (const Bad& b : bad) {
    s = call(b.req, &resp);
    EXPECT_EQ(s.error_code(), b.code) << b.text << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(b.text), std::string::npos) << s.error_message();
  }

  // Half precision on request: the reply uses the same dtype, close to F32.
  std::vector<float> x(2 * dim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  std::vector<float> want(x.size());
  ASSERT_TRUE(model_->layers()[1].local_experts[0]->Forward(x.data(), 2, want.data()).ok());
  v1::ForwardRequest half = request(1, 0, 2, 0);
  half.set_dtype(v1::DTYPE_BF16);
  std::string bytes(x.size() * 2, '\0');
  for (size_t i = 0; i < x.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    const uint16_t h = static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    std::memcpy(bytes.data() + 2 * i, &h, 2);
  }
  half.mutable_experts(0)->set_rows(bytes);
  s = call(half, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.experts(0).rows().size(), bytes.size());
  double max_err = 0, max_abs = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, resp.experts(0).rows().data() + 2 * i, 2);
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float y;
    std::memcpy(&y, &bits, 4);
    max_err = std::max(max_err, std::abs(static_cast<double>(y) - want[i]));
    max_abs = std::max(max_abs, std::abs(static_cast<double>(want[i])));
  }
  EXPECT_LT(max_err, 0.03 * max_abs + 1e-3);

  // In a stream a bad request gets an error reply and the stream goes on.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto stream = stub->ForwardStream(&ctx);
    ASSERT_TRUE(stream->Write(request(0, 0, 1, row)));
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_EQ(experts::DecodeStreamError(resp.error()).code(), absl::StatusCode::kNotFound) << resp.error();
    ASSERT_TRUE(stream->Write(request(0, 1, 3, 3 * row)));
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_TRUE(resp.error().empty()) << resp.error();
    ASSERT_EQ(resp.experts_size(), 1);
    EXPECT_EQ(resp.experts(0).n_rows(), 3u);
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }

  v1::ListExpertsResponse list;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ASSERT_TRUE(stub->ListExperts(&ctx, v1::ListExpertsRequest(), &list).ok());
  EXPECT_EQ(list.dim(), static_cast<uint32_t>(dim));
  ASSERT_EQ(list.experts_size(), 3);
  EXPECT_EQ(list.experts(0).layer(), 0u);
  EXPECT_EQ(list.experts(0).expert(), 1u);
  EXPECT_EQ(list.experts(2).layer(), 1u);
  EXPECT_EQ(list.experts(2).expert(), 1u);
  ASSERT_EQ(list.weight_types_size(), 3);
  EXPECT_EQ(list.weight_types(0), "F32");
  EXPECT_EQ(list.threads(), 1u);
}

// Raw calls by method name, as stock gRPC tools make them (no generated code).
std::string ToString(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (b.Dump(&slices).ok()) {
    for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

grpc::ByteBuffer ToBuffer(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

TEST_F(RemoteExpertsTest, NodeAnswersHealthChecksAndReflection) {
  auto a = StartNode(*model_path_, "0:0");
  ASSERT_TRUE(a);
  auto channel = grpc::CreateChannel(a->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  auto next = [&] {  // bounded by the calls' deadlines
    void* tag;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    return ok;
  };
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", ToBuffer(""), &cq);
    call->StartCall();
    grpc::ByteBuffer reply;
    grpc::Status status;
    call->Finish(&reply, &status, nullptr);
    next();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(ToString(reply), std::string("\x08\x01"));  // status: SERVING
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    call->StartCall(nullptr);
    ASSERT_TRUE(next());
    call->Write(ToBuffer(std::string("\x3a\x00", 2)), nullptr);  // list_services: ""
    ASSERT_TRUE(next());
    grpc::ByteBuffer reply;
    call->Read(&reply, nullptr);
    ASSERT_TRUE(next());
    const std::string services = ToString(reply);
    EXPECT_NE(services.find("micromoe.v1.ExpertHost"), std::string::npos);
    EXPECT_NE(services.find("grpc.health.v1.Health"), std::string::npos);
    call->WritesDone(nullptr);
    next();
    grpc::Status status;
    call->Finish(&status, nullptr);
    next();
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
}

// One remote layer call: 1 row to each of 2 experts (one decode step's call
// to one node), on loopback; prints the medians. MICROMOE_RTT_MODEL=FILE
// measures with layer 0 of that model instead of a dim-1024 model whose
// experts are tiny (the figure is then mostly transport).
TEST(RemoteLatency, OneLayerRoundTrip) {
  std::string path;
  bool own_file = false;
  if (const char* env = std::getenv("MICROMOE_RTT_MODEL")) {
    path = env;
  } else {
    tools::TinyModelSpec spec;
    spec.n_embd = 1024;
    spec.n_head = 8;
    spec.n_head_kv = 4;
    spec.n_ff = 64;
    spec.n_layer = 1;
    spec.n_expert = 2;
    spec.n_expert_used = 2;
    path = WriteModel("latency", spec);
    own_file = true;
  }
  auto model = runtime::Model::Load(path, runtime::LoadOptions{.load_tokenizer = false});
  ASSERT_TRUE(model.ok()) << model.status();
  auto node = StartNode(path, "0:0-1");
  ASSERT_TRUE(node);
  const int dim = (*model)->hparams().n_embd;
  std::vector<float> x(dim), y0(dim), y1(dim), ref0(dim), ref1(dim);
  for (int i = 0; i < dim; ++i) x[i] = std::sin(0.1f * i);
  const auto& local = (*model)->layers()[0].local_experts;
  tbb::global_control one_thread(tbb::global_control::max_allowed_parallelism, 1);  // as the node's -t 1
  std::vector<double> compute_us;
  for (int i = 0; i < 60; ++i) {
    const Clock::time_point t = Clock::now();
    ASSERT_TRUE(local[0]->Forward(x.data(), 1, ref0.data()).ok());
    ASSERT_TRUE(local[1]->Forward(x.data(), 1, ref1.data()).ok());
    if (i >= 10) compute_us.push_back(MsSince(t) * 1000);
  }
  std::sort(compute_us.begin(), compute_us.end());
  std::printf("[ metric   ] the same 2 experts computed here (1 thread, dim %d, ffn %lld): median %.0f us\n", dim,
              static_cast<long long>((*model)->hparams().n_ff),
              compute_us[compute_us.size() / 2]);

  auto measure = [&](bool use_stream) {
    experts::PlacementOptions options;
    auto ep = std::make_shared<experts::RemoteEndpoint>(node->address(), options);
    experts::RemoteGroup group({ep}, dim, options, use_stream);
    std::vector<experts::ExpertCall> calls = {{0, x.data(), 1, y0.data()}, {1, x.data(), 1, y1.data()}};
    std::vector<double> us;
    for (int i = 0; i < 420; ++i) {
      const Clock::time_point t = Clock::now();
      const absl::Status s = group.ForwardBatch(0, calls);
      if (!s.ok()) {
        ADD_FAILURE() << s;
        return 0.0;
      }
      if (i >= 20) us.push_back(MsSince(t) * 1000);
    }
    EXPECT_EQ(y0, ref0);
    EXPECT_EQ(y1, ref1);
    std::sort(us.begin(), us.end());
    std::printf("[ metric   ] remote layer call (%s, 2 experts x 1 row x dim %d): median %.0f us, p90 %.0f us\n",
                use_stream ? "stream" : "unary", dim, us[us.size() / 2], us[us.size() * 9 / 10]);
    return us[us.size() / 2];
  };
  EXPECT_GT(measure(true), 0);
  EXPECT_GT(measure(false), 0);
  if (own_file) std::remove(path.c_str());
}

// Decode throughput with experts 4-7 of every layer on one node against all
// local, side by side, 1 thread in each process. Runs only with
// MICROMOE_THROUGHPUT_MODEL=FILE (a model with 8 experts, e.g. the bench shape).
TEST(RemoteThroughput, HalfTheExpertsOnANode) {
  const char* path = std::getenv("MICROMOE_THROUGHPUT_MODEL");
  if (path == nullptr) GTEST_SKIP() << "set MICROMOE_THROUGHPUT_MODEL to a model file";
  auto model = runtime::Model::Load(path, runtime::LoadOptions{.load_tokenizer = false});
  ASSERT_TRUE(model.ok()) << model.status();
  runtime::Model& m = **model;
  const auto& hp = m.hparams();
  ASSERT_EQ(hp.n_expert, 8);
  tbb::global_control one_thread(tbb::global_control::max_allowed_parallelism, 1);
  auto node = StartNode(path, "*:4-7");
  ASSERT_TRUE(node);
  Placement p;
  Place(&p, hp.n_layer, 4, 7, {node->address()});
  auto remote = RemoteExperts::Connect(p, hp.n_embd);
  ASSERT_TRUE(remote.ok());
  constexpr int kTokens = 64;
  auto decode = [&] {
    runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, kTokens, 1);
    EXPECT_TRUE(kv.Start(0).ok());
    std::vector<float> logits;
    const Clock::time_point t = Clock::now();
    for (int i = 0; i < kTokens; ++i) {
      EXPECT_TRUE(runtime::Forward(m, {{3 + (i * 37) % 200, i, 0, true}}, kv, &logits).ok());
    }
    return kTokens / (MsSince(t) / 1000);
  };
  auto set_remote = [&](bool on) {
    for (const auto& e : (*remote)->experts()) {
      m.SetExpert(e.layer, e.expert, on ? e.impl : m.layers()[e.layer].local_experts[e.expert].get());
    }
  };
  decode();  // warm the page cache and the connection
  set_remote(true);
  decode();
  for (int round = 0; round < 3; ++round) {
    set_remote(false);
    const double local = decode();
    set_remote(true);
    const double half = decode();
    std::printf("[ metric   ] decode: all local %.1f tokens/s, experts 4-7 on a node %.1f tokens/s (%.0f%%)\n", local,
                half, 100 * half / local);
  }
  set_remote(false);
}

}  // namespace
}  // namespace micromoe
