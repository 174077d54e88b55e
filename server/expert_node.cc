#include "server/expert_node.h"

#include "server/shutdown_signal.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <tbb/global_control.h>

#include "base/str_cat.h"
#include "experts/local_expert.h"
#include "experts/worker_team.h"
#include "experts/placement.h"
#include "experts/remote_expert.h"
#include "kernels/quant.h"
#include "micromoe.grpc.pb.h"
#include "runtime/model.h"

namespace micromoe::server {
namespace {

using experts::kMaxRowsPerExpert;

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

double ResidentMiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  }
  return 0;
}

int BytesPerValue(v1::DType t) {
  switch (t) {
    case v1::DTYPE_F32: return 4;
    case v1::DTYPE_F16:
    case v1::DTYPE_BF16: return 2;
    default: return 0;
  }
}

void Decode(v1::DType t, const std::string& bytes, float* out, size_t n) {
  if (t == v1::DTYPE_F32) {
    std::memcpy(out, bytes.data(), n * 4);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    out[i] = t == v1::DTYPE_F16 ? kernels::Fp16ToFp32(h) : kernels::Bf16ToFp32(h);
  }
}

void Encode(v1::DType t, const float* in, size_t n, std::string* bytes) {
  bytes->resize(n * BytesPerValue(t));
  if (t == v1::DTYPE_F32) {
    std::memcpy(bytes->data(), in, n * 4);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = t == v1::DTYPE_F16 ? kernels::Fp32ToFp16(in[i]) : kernels::Fp32ToBf16(in[i]);
    std::memcpy(bytes->data() + 2 * i, &h, 2);
  }
}

// The experts this node serves and how one request runs. Immutable after
// construction, so every method is thread-safe.
class ExpertTable {
 public:
  ExpertTable(const runtime::Model& model, const std::vector<std::pair<int, int>>& held) : model_(model) {
    const runtime::HParams& hp = model.hparams();
    held_.assign(hp.n_layer, std::vector<bool>(hp.n_expert, false));
    for (const auto& [l, e] : held) held_[l][e] = true;
    held_list_ = held;
  }

  const std::vector<std::pair<int, int>>& held() const { return held_list_; }

  // Expert (l, e)'s weights: the ranges of the mapping it reads (rows not
  // packed) and the bytes of its packed copies.
  const experts::LocalExpert& Local(int l, int e) const {
    return static_cast<const experts::LocalExpert&>(*model_.layers()[l].local_experts[e]);
  }

  std::string WeightType(int l) const {
    const gguf::TensorInfo* t = model_.file().FindTensor(StrCat("blk.", l, ".ffn_gate_exps.weight"));
    return t ? std::string(gguf::TypeName(t->type)) : "";
  }

  // Checks every entry before running any, then runs them all.
  absl::Status Run(const v1::ForwardRequest& req, v1::ForwardResponse* resp) const {
    const runtime::HParams& hp = model_.hparams();
    const int64_t dim = hp.n_embd;
    if (req.layer() >= static_cast<uint32_t>(hp.n_layer)) {
      return absl::InvalidArgumentError(
          StrCat("layer ", req.layer(), " is outside the model (layers 0-", hp.n_layer - 1, ")"));
    }
    if (req.dim() != static_cast<uint32_t>(dim)) {
      return absl::InvalidArgumentError(StrCat("dim ", req.dim(), " does not match the model's hidden size ", dim));
    }
    const int value_bytes = BytesPerValue(req.dtype());
    if (value_bytes == 0) return absl::InvalidArgumentError(StrCat("unknown dtype ", static_cast<int>(req.dtype())));
    const int layer = static_cast<int>(req.layer());
    if (req.experts_size() > hp.n_expert) {
      return absl::InvalidArgumentError(StrCat(req.experts_size(), " entries, more than the model's ", hp.n_expert,
                                               " experts (send each expert once per request)"));
    }
    for (int i = 0; i < req.experts_size(); ++i) {
      const v1::ExpertRows& x = req.experts(i);
      if (x.expert() >= static_cast<uint32_t>(hp.n_expert)) {
        return absl::InvalidArgumentError(StrCat("experts[", i, "]: expert ", x.expert(),
                                                 " is outside the model (experts 0-", hp.n_expert - 1, ")"));
      }
      if (!held_[layer][x.expert()]) {
        return absl::NotFoundError(StrCat("layer ", layer, " expert ", x.expert(), " is not held by this node"));
      }
      if (x.n_rows() > kMaxRowsPerExpert) {
        return absl::InvalidArgumentError(
            StrCat("experts[", i, "]: n_rows ", x.n_rows(), " is above the limit of ", kMaxRowsPerExpert));
      }
      // n_rows <= 2^16 and dim < 2^32: the product fits in 64 bits.
      const uint64_t want = static_cast<uint64_t>(x.n_rows()) * static_cast<uint64_t>(dim) * value_bytes;
      if (x.rows().size() != want) {
        return absl::InvalidArgumentError(StrCat("experts[", i, "]: ", x.n_rows(), " rows of ", dim, " values need ",
                                                 want, " bytes, got ", x.rows().size()));
      }
    }

    resp->set_request_id(req.request_id());
    for (int i = 0; i < req.experts_size(); ++i) {
      v1::ExpertRows* y = resp->add_experts();
      y->set_expert(req.experts(i).expert());
      y->set_n_rows(req.experts(i).n_rows());
    }
    // All entries as one run over both cores (experts::ForwardLocalExperts).
    // A decode step's request (a few rows per expert) runs on a WorkerTeam,
    // as in runtime::Forward: 1.03-1.04x for one Q4_0 expert of the bench
    // model per request and 1.05-1.06x for two (Q8_0 1.05), the team made per
    // request included (in-process alternation of 200-request blocks, 2
    // threads, medians of 10-20 rounds).
    std::vector<std::vector<float>> in(req.experts_size()), out(req.experts_size());
    std::vector<experts::LocalExpertCall> calls;
    bool decode = true;
    for (int i = 0; i < req.experts_size(); ++i) {
      const v1::ExpertRows& x = req.experts(i);
      const size_t n = static_cast<size_t>(x.n_rows()) * dim;
      in[i].resize(n);
      out[i].resize(n);
      Decode(req.dtype(), x.rows(), in[i].data(), n);
      if (n > 0) calls.push_back({&Local(layer, x.expert()), in[i].data(), x.n_rows(), out[i].data()});
      decode = decode && x.n_rows() <= experts::kMemoryBoundRows;
    }
    std::optional<experts::WorkerTeam> team;
    if (decode && !calls.empty()) team.emplace();
    experts::ForwardLocalExperts(calls.data(), calls.size());
    for (int i = 0; i < req.experts_size(); ++i) {
      Encode(req.dtype(), out[i].data(), out[i].size(), resp->mutable_experts(i)->mutable_rows());
    }
    return absl::OkStatus();
  }

 private:
  const runtime::Model& model_;
  std::vector<std::vector<bool>> held_;
  std::vector<std::pair<int, int>> held_list_;
};

// One ForwardStream: read a request, answer it, read the next. Per-request
// failures go in the reply's `error` and the stream stays open.
class ForwardStreamReactor final : public grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse> {
 public:
  ForwardStreamReactor(const ExpertTable* table, const std::atomic<bool>* stopping)
      : table_(table), stopping_(stopping) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the router closed its side, or the call was cancelled
      Finish(grpc::Status::OK);
      return;
    }
    response_.Clear();
    if (const absl::Status s = table_->Run(request_, &response_); !s.ok()) {
      response_.Clear();
      response_.set_request_id(request_.request_id());
      response_.set_error(experts::EncodeStreamError(s));
    }
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    // While shutting down, end streams between requests so routers move on.
    if (stopping_->load()) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "expert node shutting down"));
      return;
    }
    StartRead(&request_);
  }

  // gRPC's callback API hands ownership of the reactor to this call.
  void OnDone() override { delete this; }

 private:
  const ExpertTable* table_;
  const std::atomic<bool>* stopping_;
  v1::ForwardRequest request_;
  v1::ForwardResponse response_;
};

// Translates between micromoe.v1.ExpertHost messages and the ExpertTable.
class ExpertHostService final : public v1::ExpertHost::CallbackService {
 public:
  ExpertHostService(const runtime::Model& model, const ExpertTable& table, int threads)
      : model_(model), table_(table), threads_(threads) {}

  void Stop() { stopping_.store(true); }

  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* ctx, const v1::ForwardRequest* req,
                                    v1::ForwardResponse* resp) override {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(ToGrpc(table_.Run(*req, resp)));
    return r;
  }

  grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* ForwardStream(
      grpc::CallbackServerContext* ctx) override {
    return new ForwardStreamReactor(&table_, &stopping_);
  }

  grpc::ServerUnaryReactor* ListExperts(grpc::CallbackServerContext* ctx, const v1::ListExpertsRequest* req,
                                        v1::ListExpertsResponse* resp) override {
    auto name = model_.file().GetString("general.name");
    if (name.ok()) resp->set_model_name(std::string(*name));
    resp->set_dim(static_cast<uint32_t>(model_.hparams().n_embd));
    for (const auto& [l, e] : table_.held()) {
      v1::ExpertRef* ref = resp->add_experts();
      ref->set_layer(static_cast<uint32_t>(l));
      ref->set_expert(static_cast<uint32_t>(e));
      resp->add_weight_types(table_.WeightType(l));
    }
    resp->set_threads(static_cast<uint32_t>(threads_));
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

 private:
  const runtime::Model& model_;
  const ExpertTable& table_;
  const int threads_;
  std::atomic<bool> stopping_{false};
};

// Releases the pages of every tensor outside `keep` (ranges in the mapping).
void DropAllBut(const gguf::File& file, std::vector<std::pair<const uint8_t*, uint64_t>> keep) {
  std::sort(keep.begin(), keep.end());
  for (const gguf::TensorInfo& t : file.tensors()) {
    const uint8_t* at = t.data;
    const uint8_t* end = t.data + t.n_bytes;
    for (const auto& [k, n] : keep) {
      if (k + n <= at || k >= end) continue;
      if (k > at) file.DropPages(at, static_cast<uint64_t>(k - at));  // whole pages inside only
      at = std::max(at, k + n);
    }
    if (end > at) file.DropPages(at, static_cast<uint64_t>(end - at));
  }
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int RunExpertNode(const ExpertNodeArgs& args) {
  // Before any thread starts, so every thread inherits the mask.
  BlockShutdownSignals();

  const int threads =
      args.threads > 0 ? args.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);

  std::fprintf(stderr, "loading %s\n", args.model.c_str());
  runtime::LoadOptions load;
  load.load_tokenizer = false;
  load.map_token_embeddings = false;
  // Only the held experts are packed: the rest of the model takes no memory here.
  load.pack_other_matrices = false;
  // Spec errors are reported below, after loading.
  load.experts_to_pack = [spec = args.experts_spec](const runtime::HParams& hp) {
    runtime::LoadOptions::ExpertMask held(hp.n_layer, std::vector<bool>(hp.n_expert, false));
    if (auto parsed = experts::ParseExpertSpec(spec, hp.n_layer, hp.n_expert); parsed.ok()) {
      for (const auto& [l, e] : *parsed) held[l][e] = true;
    }
    return held;
  };
  auto model = runtime::Model::Load(args.model, load);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  const runtime::HParams& hp = (*model)->hparams();
  if (hp.n_expert == 0) return Fail(StrCat(args.model, " has no experts (a dense model)"));
  auto held = experts::ParseExpertSpec(args.experts_spec, hp.n_layer, hp.n_expert);
  if (!held.ok()) return Fail(std::string(held.status().message()));
  ExpertTable table(**model, *held);
  // Packed experts are resident already. Fault in the rest of the held
  // experts' weights (rows left in the file's layout) now, one read per page,
  // so the first request is not slow; then give back every other page of the
  // tensors that loading or the kernel's fault-around mapped: resident memory
  // is what this node holds.
  std::vector<std::pair<const uint8_t*, uint64_t>> keep;
  uint64_t held_bytes = 0;
  volatile uint64_t sink = 0;  // keeps the reads
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  for (const auto& [l, e] : *held) {
    held_bytes += table.Local(l, e).PackedBytes();
    for (const auto& [data, n] : table.Local(l, e).MappedRanges()) {
      held_bytes += n;
      keep.emplace_back(data, n);
      for (uint64_t i = 0; i < n; i += page) sink = sink + data[i];
    }
  }
  DropAllBut((*model)->file(), keep);

  ExpertHostService service(**model, table, threads);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(args.listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(experts::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(experts::kMaxMessageBytes);
  // A port in use is an error, not a port silently shared with another node.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Fail(StrCat("cannot listen on ", args.listen));

  const size_t colon = args.listen.rfind(':');
  const std::string host = colon == std::string::npos ? args.listen : args.listen.substr(0, colon);
  std::fprintf(stderr, "serving %zu experts of %d layers x %d (%.1f MiB of weights); resident memory %.1f MiB (model file %.1f MiB)\n",
               held->size(), hp.n_layer, hp.n_expert, held_bytes / 1048576.0,
               ResidentMiB(), (*model)->file().size() / 1048576.0);
  std::fprintf(stderr, "listening on %s:%d\n", host.c_str(), port);
  std::fflush(stderr);

  WaitForShutdownSignal();
  std::fprintf(stderr, "shutting down\n");
  service.Stop();
  if (auto* health = server->GetHealthCheckService()) health->Shutdown();
  // Requests in flight finish; streams end at their next request boundary, or
  // are cancelled at the deadline when idle.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  std::fprintf(stderr, "stopped\n");
  return 0;
}

}  // namespace micromoe::server
