// A loaded model: hyper-parameters, validated tensor views over the mapping,
// the routers and experts of each MoE layer, and the tokenizer.
//
// Supported architectures: llama (dense or with Mixtral-style experts), olmoe,
// qwen2moe (shared expert), qwen3moe (per-head Q/K norm), granitemoe (scales).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "experts/expert.h"
#include "experts/local_expert.h"
#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "kernels/packed.h"
#include "router/router.h"
#include "runtime/tokenizer.h"

namespace micromoe::runtime {

enum class RopeStyle { kNormal, kNeox };

struct HParams {
  std::string arch;
  int n_vocab = 0;
  int n_embd = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  int n_ff = 0;           // dense FFN / expert hidden size
  int n_ff_shared = 0;    // shared expert hidden size (0: none)
  int n_expert = 0;       // 0: dense model
  int n_expert_used = 0;
  int rope_dim = 0;
  float rope_base = 10000.0f;
  RopeStyle rope_style = RopeStyle::kNormal;
  float rms_eps = 1e-5f;
  int n_ctx_train = 0;
  // granitemoe scales (1 when absent)
  float embedding_scale = 1.0f;
  float residual_scale = 1.0f;
  float attention_scale = 0.0f;  // 0: 1/sqrt(head_dim)
  float logit_scale = 1.0f;
  router::GatingOptions gating;

  int kv_dim() const { return n_head_kv * head_dim; }
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  std::vector<float> q_norm, k_norm;        // olmoe: whole vector; qwen3moe: per head (empty when absent)
  std::vector<float> bq, bk, bv;            // qwen2moe (empty when absent)
  kernels::MatrixView wq, wk, wv, wo;
  // MoE
  std::unique_ptr<router::Router> router;
  std::vector<std::unique_ptr<experts::Expert>> local_experts;  // one per expert id
  std::unique_ptr<experts::LocalExpert> shared_expert;          // qwen2moe
  kernels::MatrixView shared_gate;                              // 1 x n_embd
  // Dense FFN (llama without experts)
  std::unique_ptr<experts::LocalExpert> dense_ffn;
};

struct LoadOptions {
  bool load_tokenizer = true;
  // Repack the matrices whose types the active kernels compute with packed
  // (Q8_0, Q4_0, the K-quants, F16, BF16; kernels/packed.h) and release the
  // mapped pages they replace. Off: compute from the mapping.
  bool pack_weights = true;
  // With pack_weights: which routed experts to pack, as [layer][expert]
  // (called once, with the file's hyper-parameters; every expert when empty),
  // and whether to pack the other matrices (attention, output head, shared
  // expert). Matrices that run elsewhere (experts on other nodes; everything
  // but the held experts on an expert node) then take no memory here.
  using ExpertMask = std::vector<std::vector<bool>>;
  std::function<ExpertMask(const HParams& hp)> experts_to_pack = nullptr;
  bool pack_other_matrices = true;
  // Map the token-embedding table's pages at load (gguf::File::MapPages), so
  // a generated token's row does not wait on a page fault. Off where no token
  // is embedded (an expert node).
  bool map_token_embeddings = true;
};

class Model {
 public:
  // Maps, validates (metadata and every tensor's presence, shape and type) and builds the model.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path,
                                                     const LoadOptions& options = {});

  const HParams& hparams() const { return hp_; }
  const gguf::File& file() const { return *file_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const kernels::MatrixView& token_embd() const { return token_embd_; }
  const kernels::MatrixView& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  // The expert implementations used for a layer, by expert id; local by default.
  const std::vector<const experts::Expert*>& experts(int layer) const { return expert_table_[layer]; }
  // Replaces the implementation of (layer, expert), e.g. with a remote one; not owned.
  void SetExpert(int layer, int e, const experts::Expert* impl) { expert_table_[layer][e] = impl; }
  // Total parameters (elements of all tensors).
  uint64_t n_params() const;

 private:
  Model() = default;
  absl::Status Build(const LoadOptions& options);
  // The view of matrix `slice` of `t`, packed when options allow and the
  // kernels have a packed form for its type.
  kernels::MatrixView Matrix(const gguf::TensorInfo& t, int64_t slice, bool pack);

  std::unique_ptr<gguf::File> file_;
  HParams hp_;
  std::unique_ptr<Tokenizer> tokenizer_;
  kernels::MatrixView token_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<std::vector<const experts::Expert*>> expert_table_;
  std::unique_ptr<kernels::PackedArena> packed_;  // holds the packed matrices the views point into
};

}  // namespace micromoe::runtime
