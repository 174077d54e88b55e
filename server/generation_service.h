// micromoe.v1.Generation over a Scheduler: translates messages to and from the
// runtime, validates requests, maps statuses to gRPC codes.
#pragma once

#include <memory>
#include <vector>

#include "micromoe.grpc.pb.h"
#include "experts/placement.h"
#include "runtime/model.h"
#include "server/scheduler.h"

namespace micromoe::server {

class GenerationService final : public micromoe::v1::Generation::Service {
 public:
  // `placement` (may be empty) is reported by ModelInfo.
  GenerationService(const runtime::Model& model, Scheduler& scheduler,
                    std::vector<experts::PlacedExpert> placement);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status ModelInfo(grpc::ServerContext* context, const v1::ModelInfoRequest* request,
                         v1::ModelInfoResponse* response) override;

 private:
  const runtime::Model& model_;
  Scheduler& scheduler_;
  std::vector<experts::PlacedExpert> placement_;
};

// absl::Status -> grpc::Status with the same code and message.
grpc::Status ToGrpc(const absl::Status& s);

}  // namespace micromoe::server
