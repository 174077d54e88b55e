#include "server/serve.h"

#include <cstdio>
#include <memory>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <tbb/global_control.h>

#include "experts/placement.h"
#include "server/generation_service.h"
#include "server/scheduler.h"
#include "server/shutdown_signal.h"

namespace micromoe::server {

int RunServe(const ServeArgs& args) {
  BlockShutdownSignals();
  const int threads = args.threads > 0 ? args.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  tbb::global_control control(tbb::global_control::max_allowed_parallelism, threads);

  SchedulerOptions options;
  options.max_sequences = args.max_sequences;
  options.n_ctx = args.n_ctx;
  if (args.on_expert_failure == "degrade") {
    options.expert_failure = runtime::ExpertFailurePolicy::kDegrade;
  } else if (args.on_expert_failure != "fail") {
    std::fprintf(stderr, "error: --on-expert-failure must be 'fail' or 'degrade', not '%s'\n", args.on_expert_failure.c_str());
    return 1;
  }
  if (args.max_sequences < 1 || args.max_sequences > 4096) {
    std::fprintf(stderr, "error: --max-sequences must be between 1 and 4096\n");
    return 1;
  }

  std::fprintf(stderr, "loading %s\n", args.model.c_str());
  runtime::LoadOptions load;
  if (!args.placement.empty()) {
    // Experts placed on other nodes are not packed here (they never run
    // here). Placement errors are reported below, after loading.
    load.experts_to_pack = [path = args.placement](const runtime::HParams& hp) {
      runtime::LoadOptions::ExpertMask local(hp.n_layer, std::vector<bool>(hp.n_expert, true));
      if (auto p = experts::ParsePlacementFile(path, hp.n_layer, hp.n_expert); p.ok()) {
        for (const experts::PlacedExpert& e : p->experts) local[e.layer][e.expert] = false;
      }
      return local;
    };
  }
  auto model = runtime::Model::Load(args.model, load);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const runtime::HParams& hp = (*model)->hparams();
  experts::Placement placement;
  std::unique_ptr<experts::RemoteExperts> remote;
  if (!args.placement.empty()) {
    auto p = experts::ParsePlacementFile(args.placement, hp.n_layer, hp.n_expert);
    if (!p.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(p.status().message()).c_str());
      return 1;
    }
    placement = *p;
    auto r = experts::RemoteExperts::Connect(placement, hp.n_embd);
    if (!r.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(r.status().message()).c_str());
      return 1;
    }
    remote = std::move(*r);
    for (const auto& e : remote->experts()) (*model)->SetExpert(e.layer, e.expert, e.impl);
    std::fprintf(stderr, "%zu experts placed on expert nodes; on failure: %s\n", remote->experts().size(),
                 args.on_expert_failure.c_str());
  }

  Scheduler scheduler(**model, options);
  GenerationService service(**model, scheduler, placement.experts);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(args.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "error: cannot listen on %s\n", args.listen.c_str());
    return 1;
  }
  const std::string host = args.listen.substr(0, args.listen.rfind(':'));
  std::fprintf(stderr, "listening on %s:%d (max %d sequences, context %d, %d threads)\n", host.c_str(), port,
               options.max_sequences, scheduler.options().n_ctx, threads);
  std::fflush(stderr);

  WaitForShutdownSignal();
  std::fprintf(stderr, "shutting down: finishing %d sequences in flight\n", scheduler.active());
  scheduler.StopAccepting();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return 0;
}

}  // namespace micromoe::server
