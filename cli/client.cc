#include "cli/client.h"

#include <chrono>
#include <cstdio>

#include <grpcpp/grpcpp.h>

#include "micromoe.grpc.pb.h"

namespace micromoe::cli {
namespace {

int FailRpc(const grpc::Status& s) {
  std::fprintf(stderr, "error: %s (gRPC code %d)\n", s.error_message().c_str(), static_cast<int>(s.error_code()));
  return 1;
}

std::unique_ptr<v1::Generation::Stub> Connect(const std::string& server) {
  return v1::Generation::NewStub(grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
}

}  // namespace

int RunClientGenerate(const ClientGenerateArgs& a) {
  auto stub = Connect(a.server);
  v1::GenerateRequest req;
  req.set_prompt(a.prompt);
  req.set_max_tokens(a.n);
  req.set_chat(a.chat);
  if (a.temperature) req.mutable_sampling()->set_temperature(*a.temperature);
  if (a.top_k) req.mutable_sampling()->set_top_k(*a.top_k);
  if (a.top_p) req.mutable_sampling()->set_top_p(*a.top_p);
  if (a.seed) req.mutable_sampling()->set_seed(*a.seed);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(a.timeout_s));
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse r;
  bool got_final = false;
  while (reader->Read(&r)) {
    if (r.has_chunk()) {
      std::fputs(r.chunk().text().c_str(), stdout);
      std::fflush(stdout);
    } else if (r.has_final()) {
      const v1::GenerateFinal& f = r.final();
      std::printf("%s\n", f.text_tail().c_str());
      std::fprintf(stderr, "prompt: %d tokens; generated: %d tokens in %.3f s (%.1f t/s); first token after %.3f s; finish: %s; seed %llu\n",
                   f.prompt_tokens(), f.completion_tokens(), f.decode_seconds(),
                   f.completion_tokens() / std::max(f.decode_seconds(), 1e-9), f.prefill_seconds(),
                   f.finish_reason().c_str(), static_cast<unsigned long long>(f.seed()));
      for (const auto& e : f.unavailable_experts()) {
        std::fprintf(stderr, "warning: expert %u of layer %u was unavailable for some tokens\n", e.expert(), e.layer());
      }
      got_final = true;
    }
  }
  const grpc::Status s = reader->Finish();
  if (!s.ok()) {
    std::fputs("\n", stdout);
    return FailRpc(s);
  }
  if (!got_final) {
    std::fprintf(stderr, "error: the stream ended without a final message\n");
    return 1;
  }
  return 0;
}

int RunClientInfo(const std::string& server, int timeout_s) {
  auto stub = Connect(server);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  v1::ModelInfoResponse info;
  const grpc::Status s = stub->ModelInfo(&ctx, v1::ModelInfoRequest(), &info);
  if (!s.ok()) return FailRpc(s);
  std::printf("%s", info.DebugString().c_str());
  return 0;
}

}  // namespace micromoe::cli
