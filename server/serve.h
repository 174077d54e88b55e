// `micromoe serve`: the router node. Serves micromoe.v1.Generation (plus
// grpc.health.v1 and reflection) over a continuous-batching scheduler; experts
// listed in a placement file run on expert nodes, the rest locally.
#pragma once

#include <string>

namespace micromoe::server {

struct ServeArgs {
  std::string model;
  std::string listen = "127.0.0.1:50051";
  std::string placement;            // JSON file, see experts/placement.h; empty: all local
  int threads = 0;                  // 0: all cores
  int max_sequences = 8;
  int n_ctx = 2048;
  std::string on_expert_failure = "fail";  // "fail" | "degrade"
};

// Runs until SIGINT/SIGTERM, then stops accepting, lets streams in flight
// finish for up to 10 s and ends the rest. Prints "listening on HOST:PORT" to
// stderr once ready. Returns the process exit code.
int RunServe(const ServeArgs& args);

}  // namespace micromoe::server
