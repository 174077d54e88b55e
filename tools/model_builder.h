// Writes small random-weight MoE models with the project's own GGUF writer:
// the models the tests run and the demo model the README's first command uses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/types.h"
#include "gguf/writer.h"

namespace micromoe::tools {

struct TinyModelSpec {
  std::string arch = "llama";  // or "qwen3moe" (per-head Q/K norm, NEOX rope)
  int n_embd = 64;
  int n_layer = 2;
  int n_head = 4;
  int n_head_kv = 2;
  int n_ff = 96;
  int n_expert = 4;       // 0: dense llama
  int n_expert_used = 2;
  int n_ctx = 256;
  float rope_base = 10000.0f;
  bool tied_output = false;
  gguf::TensorType weight_type = gguf::TensorType::kF32;  // matrices; norms stay F32
  int n_vocab = 0;  // 0: the tiny vocabulary as is; larger pads it with filler pieces
  uint64_t seed = 1;
  float weight_scale = 0.15f;  // uniform(-s, s) for matrices
};

// The SentencePiece-style vocabulary the builder writes: <unk>, <s>, </s>, the
// 256 byte tokens, then printable pieces (characters and common English pieces).
std::vector<std::string> TinyVocabulary();

// Fills `writer` with the model's metadata, vocabulary and tensors.
void BuildTinyModel(const TinyModelSpec& spec, gguf::Writer* writer);

}  // namespace micromoe::tools
