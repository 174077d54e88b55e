// `micromoe expert-node`: serves a subset of a model's experts over
// micromoe.v1.ExpertHost (plus grpc.health.v1 and reflection).
#pragma once

#include <string>

namespace micromoe::server {

struct ExpertNodeArgs {
  std::string model;
  std::string experts_spec;  // "LAYERS:EXPERTS[,...]", see experts/placement.h
  std::string listen = "127.0.0.1:50061";
  int threads = 0;           // 0: all cores
};

// Loads the model, serves the listed experts until SIGINT or SIGTERM, then
// shuts down gracefully. Prints "listening on HOST:PORT" to stderr once ready
// (port 0 picks a free port). Returns the process exit code.
int RunExpertNode(const ExpertNodeArgs& args);

}  // namespace micromoe::server
