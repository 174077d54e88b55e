// Writes the demo model (random weights, Mixtral layout) that the README's
// first command generates with, until a trained model ships in models/.
#include <cstdio>
#include <string>

#include "tools/model_builder.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.gguf\n", argv[0]);
    return 1;
  }
  micromoe::tools::TinyModelSpec spec;
  spec.n_embd = 256;
  spec.n_layer = 4;
  spec.n_head = 8;
  spec.n_head_kv = 4;
  spec.n_ff = 512;
  spec.n_expert = 8;
  spec.n_expert_used = 2;
  spec.n_ctx = 2048;
  spec.weight_type = micromoe::gguf::TensorType::kQ8_0;
  micromoe::gguf::Writer w;
  micromoe::tools::BuildTinyModel(spec, &w);
  if (auto s = w.WriteFile(argv[1]); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %s\n", argv[1]);
  return 0;
}
