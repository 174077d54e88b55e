// `micromoe client`: talks to a router node over micromoe.v1.Generation.
#pragma once

#include <optional>
#include <string>

namespace micromoe::cli {

struct ClientGenerateArgs {
  std::string server = "127.0.0.1:50051";
  std::string prompt;
  int n = 64;
  std::optional<float> temperature;
  std::optional<int> top_k;
  std::optional<float> top_p;
  std::optional<uint64_t> seed;
  int timeout_s = 600;
  bool chat = false;
};

// Streams the continuation to stdout exactly as `micromoe generate` prints it,
// the final message's figures to stderr. Returns the exit code (1 on any error).
int RunClientGenerate(const ClientGenerateArgs& args);

// Prints the server's ModelInfo. Returns the exit code.
int RunClientInfo(const std::string& server, int timeout_s);

}  // namespace micromoe::cli
