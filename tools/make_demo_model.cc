// Writes random-weight Mixtral-style models with the project's GGUF writer:
//   make_demo_model OUT.gguf                 the demo model the README's first command uses
//   make_demo_model OUT.gguf bench [TYPE]    the benchmark shape of the performance issue
//                                            (8 layers, hidden 1024, 8 experts of FFN 2816,
//                                            top-2, 16 heads, 4 KV heads, vocabulary 32000)
// TYPE is f32, f16, bf16, q8_0 (default), q4_0, or q2_k, q3_k, iq4_nl or iq4_xs
// (random blocks: `micromoe quantize` has no encoder for those four).
#include <cstdio>
#include <string>

#include "tools/model_builder.h"

int main(int argc, char** argv) {
  using micromoe::gguf::TensorType;
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s OUT.gguf [demo|bench] [f32|f16|bf16|q8_0|q4_0|q2_k|q3_k|iq4_nl|iq4_xs]\n", argv[0]);
    return 1;
  }
  const std::string shape = argc > 2 ? argv[2] : "demo";
  const std::string type = argc > 3 ? argv[3] : "q8_0";
  micromoe::tools::TinyModelSpec spec;
  if (type == "f32") spec.weight_type = TensorType::kF32;
  else if (type == "f16") spec.weight_type = TensorType::kF16;
  else if (type == "bf16") spec.weight_type = TensorType::kBF16;
  else if (type == "q8_0") spec.weight_type = TensorType::kQ8_0;
  else if (type == "q4_0") spec.weight_type = TensorType::kQ4_0;
  else if (type == "q2_k") spec.weight_type = TensorType::kQ2_K;
  else if (type == "q3_k") spec.weight_type = TensorType::kQ3_K;
  else if (type == "iq4_nl") spec.weight_type = TensorType::kIQ4_NL;
  else if (type == "iq4_xs") spec.weight_type = TensorType::kIQ4_XS;
  else {
    std::fprintf(stderr, "error: unknown type '%s'\n", type.c_str());
    return 1;
  }
  spec.n_ctx = 2048;
  spec.n_expert = 8;
  spec.n_expert_used = 2;
  if (shape == "demo") {
    spec.n_embd = 256;
    spec.n_layer = 4;
    spec.n_head = 8;
    spec.n_head_kv = 4;
    spec.n_ff = 512;
  } else if (shape == "bench") {
    spec.n_embd = 1024;
    spec.n_layer = 8;
    spec.n_head = 16;
    spec.n_head_kv = 4;
    spec.n_ff = 2816;
    spec.n_vocab = 32000;
    spec.weight_scale = 0.03f;
  } else {
    std::fprintf(stderr, "error: unknown shape '%s' (demo or bench)\n", shape.c_str());
    return 1;
  }
  micromoe::gguf::Writer w;
  micromoe::tools::BuildTinyModel(spec, &w);
  if (auto s = w.WriteFile(argv[1]); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %s (%s, %s)\n", argv[1], shape.c_str(), type.c_str());
  return 0;
}
