#include "runtime/model.h"

#include <cmath>
#include <optional>


#include "base/str_cat.h"

namespace micromoe::runtime {
namespace {

using gguf::TensorInfo;
using gguf::TensorType;

constexpr int kMaxDim = 1 << 20;  // sanity bound for any hyper-parameter

struct ArchTraits {
  std::string_view name;
  RopeStyle rope;
  bool moe_required;
};

constexpr ArchTraits kArchs[] = {
    {"llama", RopeStyle::kNormal, false},
    {"olmoe", RopeStyle::kNeox, true},
    {"qwen2moe", RopeStyle::kNeox, true},
    {"granitemoe", RopeStyle::kNormal, true},
    {"qwen3moe", RopeStyle::kNeox, true},
};

std::string ShapeString(const TensorInfo& t) {
  std::string s = "[";
  for (uint32_t d = 0; d < t.n_dims; ++d) s += StrCat(d ? ", " : "", t.ne[d]);
  return s + "]";
}

std::string ShapeString(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t d = 0; d < ne.size(); ++d) s += StrCat(d ? ", " : "", ne[d]);
  return s + "]";
}

// Looks up a tensor and checks its shape; `required` false returns nullptr when absent.
absl::StatusOr<const TensorInfo*> GetTensor(const gguf::File& f, const std::string& name,
                                            const std::vector<int64_t>& shape, bool required = true) {
  const TensorInfo* t = f.FindTensor(name);
  if (t == nullptr) {
    if (!required) return nullptr;
    return absl::InvalidArgumentError(StrCat("missing tensor '", name, "' (expected shape ",
                                             ShapeString(shape), ")"));
  }
  bool ok = t->n_dims == shape.size();
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = t->ne[d] == static_cast<uint64_t>(shape[d]);
  if (!ok) {
    return absl::InvalidArgumentError(StrCat("tensor '", name, "' has shape ", ShapeString(*t),
                                             ", expected ", ShapeString(shape)));
  }
  if (!kernels::IsSupportedWeightType(t->type)) {
    return absl::InvalidArgumentError(StrCat("tensor '", name, "' has type ",
                                             gguf::TypeName(t->type), ", which micromoe cannot compute with"));
  }
  return t;
}

kernels::MatrixView View(const TensorInfo& t, int64_t slice = 0) {
  kernels::MatrixView m;
  m.type = t.type;
  m.cols = static_cast<int64_t>(t.ne[0]);
  m.rows = static_cast<int64_t>(t.ne[1]);
  m.row_bytes = t.row_bytes();
  m.data = t.data + static_cast<uint64_t>(slice) * m.rows * m.row_bytes;
  return m;
}

std::vector<float> ToFloats(const TensorInfo& t) {
  std::vector<float> v(t.n_elements);
  kernels::DequantizeRow(t.type, t.data, v.data(), static_cast<int64_t>(t.n_elements));
  return v;
}

}  // namespace

kernels::MatrixView Model::Matrix(const TensorInfo& t, int64_t slice, bool pack) {
  kernels::MatrixView m = View(t, slice);
  if (!pack || !kernels::CanPack(m.type)) return m;
  if (packed_ == nullptr) {
    // Address space for every matrix that may be packed; only what is written becomes resident.
    uint64_t capacity = 0;
    for (const TensorInfo& u : file_->tensors()) {
      if (!kernels::CanPack(u.type) || u.n_dims < 2 || u.n_elements == 0) continue;
      capacity += kernels::PackedBytes(u.type, static_cast<int64_t>(u.ne[1]), static_cast<int64_t>(u.ne[0])) *
                  (u.n_elements / (u.ne[0] * u.ne[1]));
    }
    packed_ = std::make_unique<kernels::PackedArena>(capacity);
  }
  m = packed_->Pack(m);
  file_->DropPages(m.data, static_cast<uint64_t>(m.packed_rows) * m.row_bytes);  // the packed copy replaces them
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path, const LoadOptions& options) {
  auto file = gguf::File::Open(path);
  if (!file.ok()) return file.status();
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(*file);
  if (auto s = m->Build(options); !s.ok()) {
    return absl::Status(s.code(), StrCat("'", path, "': ", s.message()));
  }
  return m;
}

absl::Status Model::Build(const LoadOptions& options) {
  const gguf::File& f = *file_;
  auto arch = f.GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  const ArchTraits* traits = nullptr;
  for (const ArchTraits& a : kArchs) {
    if (a.name == std::string_view(arch->data(), arch->size())) traits = &a;
  }
  if (traits == nullptr) {
    return absl::InvalidArgumentError(StrCat("unsupported architecture '", *arch,
                                             "' (supported: llama, olmoe, qwen2moe, qwen3moe, granitemoe)"));
  }
  hp_.arch = std::string(traits->name);
  hp_.rope_style = traits->rope;
  const std::string p = hp_.arch + ".";

  // Integer hyper-parameter in [lo, kMaxDim].
  auto get_int = [&](const std::string& key, int lo, std::optional<int> fallback) -> absl::StatusOr<int> {
    absl::StatusOr<uint64_t> v = fallback ? f.GetUintOr(key, *fallback) : f.GetUint(key);
    if (!v.ok()) return v.status();
    if (*v < static_cast<uint64_t>(lo) || *v > static_cast<uint64_t>(kMaxDim)) {
      return absl::InvalidArgumentError(StrCat("metadata '", key, "' = ", *v, " is out of range [",
                                               lo, ", ", kMaxDim, "]"));
    }
    return static_cast<int>(*v);
  };
  auto get_float = [&](const std::string& key, double fallback) -> absl::StatusOr<float> {
    auto v = f.GetFloatOr(key, fallback);
    if (!v.ok()) return v.status();
    if (!std::isfinite(*v)) return absl::InvalidArgumentError(StrCat("metadata '", key, "' is not finite"));
    return static_cast<float>(*v);
  };
#define MICROMOE_ASSIGN(lhs, expr)   \
  do {                               \
    auto _v = (expr);                \
    if (!_v.ok()) return _v.status(); \
    lhs = *_v;                       \
  } while (0)

  MICROMOE_ASSIGN(hp_.n_embd, get_int(p + "embedding_length", 1, std::nullopt));
  MICROMOE_ASSIGN(hp_.n_layer, get_int(p + "block_count", 1, std::nullopt));
  MICROMOE_ASSIGN(hp_.n_head, get_int(p + "attention.head_count", 1, std::nullopt));
  MICROMOE_ASSIGN(hp_.n_head_kv, get_int(p + "attention.head_count_kv", 1, hp_.n_head));
  MICROMOE_ASSIGN(hp_.n_ctx_train, get_int(p + "context_length", 1, 2048));
  MICROMOE_ASSIGN(hp_.n_expert, get_int(p + "expert_count", 0, 0));
  MICROMOE_ASSIGN(hp_.n_expert_used, get_int(p + "expert_used_count", 0, 0));
  MICROMOE_ASSIGN(hp_.rope_base, get_float(p + "rope.freq_base", 10000.0));
  MICROMOE_ASSIGN(hp_.rms_eps, get_float(p + "attention.layer_norm_rms_epsilon", 1e-5));
  MICROMOE_ASSIGN(hp_.embedding_scale, get_float(p + "embedding_scale", 1.0));
  MICROMOE_ASSIGN(hp_.residual_scale, get_float(p + "residual_scale", 1.0));
  MICROMOE_ASSIGN(hp_.attention_scale, get_float(p + "attention.scale", 0.0));
  MICROMOE_ASSIGN(hp_.logit_scale, get_float(p + "logit_scale", 1.0));
  if (hp_.logit_scale == 0) return absl::InvalidArgumentError(StrCat("metadata '", p, "logit_scale' must not be 0"));
  if (hp_.n_embd % hp_.n_head != 0) {
    return absl::InvalidArgumentError(StrCat("embedding_length ", hp_.n_embd,
                                             " is not divisible by head_count ", hp_.n_head));
  }
  MICROMOE_ASSIGN(hp_.head_dim, get_int(p + "attention.key_length", 2, hp_.n_embd / hp_.n_head));
  if (hp_.head_dim % 2 != 0) return absl::InvalidArgumentError(StrCat("head dimension ", hp_.head_dim, " is odd"));
  if (hp_.n_head % hp_.n_head_kv != 0) {
    return absl::InvalidArgumentError(StrCat("attention.head_count ", hp_.n_head,
                                             " is not a multiple of head_count_kv ", hp_.n_head_kv));
  }
  MICROMOE_ASSIGN(hp_.rope_dim, get_int(p + "rope.dimension_count", 2, hp_.head_dim));
  if (hp_.rope_dim > hp_.head_dim || hp_.rope_dim % 2 != 0) {
    return absl::InvalidArgumentError(StrCat("rope.dimension_count ", hp_.rope_dim,
                                             " must be even and at most the head dimension ", hp_.head_dim));
  }
  if (hp_.n_expert > 0) {
    if (hp_.n_expert_used < 1 || hp_.n_expert_used > hp_.n_expert) {
      return absl::InvalidArgumentError(StrCat("expert_used_count ", hp_.n_expert_used,
                                               " must be between 1 and expert_count ", hp_.n_expert));
    }
  } else if (traits->moe_required) {
    return absl::InvalidArgumentError(StrCat("architecture '", hp_.arch, "' needs ", p, "expert_count > 0"));
  }
  if (hp_.arch == "qwen2moe") {
    MICROMOE_ASSIGN(hp_.n_ff, get_int(p + "expert_feed_forward_length", 1, std::nullopt));
    MICROMOE_ASSIGN(hp_.n_ff_shared, get_int(p + "expert_shared_feed_forward_length", 1, std::nullopt));
  } else if (hp_.arch == "qwen3moe") {
    MICROMOE_ASSIGN(hp_.n_ff, get_int(p + "expert_feed_forward_length", 1, std::nullopt));
  } else {
    MICROMOE_ASSIGN(hp_.n_ff, get_int(p + "feed_forward_length", 1, std::nullopt));
  }

  const int d = hp_.n_embd, hd = hp_.head_dim;
  const TensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->n_dims != 2 || embd->ne[0] != static_cast<uint64_t>(d) || embd->ne[1] > static_cast<uint64_t>(kMaxDim)) {
    return absl::InvalidArgumentError(StrCat("tensor 'token_embd.weight' must exist with shape [", d, ", n_vocab]"));
  }
  hp_.n_vocab = static_cast<int>(embd->ne[1]);
  {
    auto t = GetTensor(f, "token_embd.weight", {d, hp_.n_vocab});
    if (!t.ok()) return t.status();
    token_embd_ = View(**t);
    if (options.map_token_embeddings) {
      f.MapPages(token_embd_.data, token_embd_.row_bytes * static_cast<uint64_t>(hp_.n_vocab));
    }
  }
  const bool pack_other = options.pack_weights && options.pack_other_matrices;
  LoadOptions::ExpertMask pack_mask;
  if (options.pack_weights && options.experts_to_pack && hp_.n_expert > 0) {
    pack_mask = options.experts_to_pack(hp_);
    if (pack_mask.size() != static_cast<size_t>(hp_.n_layer)) pack_mask.clear();  // malformed: pack every expert
    for (const auto& layer : pack_mask) {
      if (layer.size() != static_cast<size_t>(hp_.n_expert)) pack_mask.clear();
    }
  }
  {
    auto t = GetTensor(f, "output_norm.weight", {d});
    if (!t.ok()) return t.status();
    output_norm_ = ToFloats(**t);
    auto o = GetTensor(f, "output.weight", {d, hp_.n_vocab}, /*required=*/false);
    if (!o.ok()) return o.status();
    output_ = *o ? Matrix(**o, 0, pack_other) : token_embd_;  // tied embeddings
  }

  hp_.gating.n_experts = hp_.n_expert;
  hp_.gating.top_k = hp_.n_expert_used;
  hp_.gating.renormalize = hp_.arch == "llama" || hp_.arch == "granitemoe" || hp_.arch == "qwen3moe";

  layers_.resize(hp_.n_layer);
  expert_table_.assign(hp_.n_layer, {});
  for (int il = 0; il < hp_.n_layer; ++il) {
    LayerWeights& L = layers_[il];
    const std::string b = StrCat("blk.", il, ".");
    auto need = [&](const std::string& n, std::vector<int64_t> shape) { return GetTensor(f, b + n, shape); };
#define MICROMOE_TENSOR(var, expr) \
  const TensorInfo* var;           \
  MICROMOE_ASSIGN(var, expr)
    MICROMOE_TENSOR(attn_norm, need("attn_norm.weight", {d}));
    MICROMOE_TENSOR(wq, need("attn_q.weight", {d, hp_.n_head * hd}));
    MICROMOE_TENSOR(wk, need("attn_k.weight", {d, hp_.kv_dim()}));
    MICROMOE_TENSOR(wv, need("attn_v.weight", {d, hp_.kv_dim()}));
    MICROMOE_TENSOR(wo, need("attn_output.weight", {hp_.n_head * hd, d}));
    MICROMOE_TENSOR(ffn_norm, need("ffn_norm.weight", {d}));
    L.attn_norm = ToFloats(*attn_norm);
    L.ffn_norm = ToFloats(*ffn_norm);
    L.wq = Matrix(*wq, 0, pack_other);
    L.wk = Matrix(*wk, 0, pack_other);
    L.wv = Matrix(*wv, 0, pack_other);
    L.wo = Matrix(*wo, 0, pack_other);
    if (hp_.arch == "olmoe" || hp_.arch == "qwen3moe") {
      // OLMoE normalises the whole Q and K vectors, Qwen3-MoE each head.
      const bool per_head = hp_.arch == "qwen3moe";
      MICROMOE_TENSOR(qn, need("attn_q_norm.weight", {per_head ? hd : hp_.n_head * hd}));
      MICROMOE_TENSOR(kn, need("attn_k_norm.weight", {per_head ? hd : hp_.kv_dim()}));
      L.q_norm = ToFloats(*qn);
      L.k_norm = ToFloats(*kn);
    }
    if (hp_.arch == "qwen2moe") {
      MICROMOE_TENSOR(bq, need("attn_q.bias", {hp_.n_head * hd}));
      MICROMOE_TENSOR(bk, need("attn_k.bias", {hp_.kv_dim()}));
      MICROMOE_TENSOR(bv, need("attn_v.bias", {hp_.kv_dim()}));
      L.bq = ToFloats(*bq);
      L.bk = ToFloats(*bk);
      L.bv = ToFloats(*bv);
    }
    if (hp_.n_expert > 0) {
      const int ne = hp_.n_expert, ff = hp_.n_ff;
      MICROMOE_TENSOR(gate_inp, need("ffn_gate_inp.weight", {d, ne}));
      MICROMOE_TENSOR(gate, need("ffn_gate_exps.weight", {d, ff, ne}));
      MICROMOE_TENSOR(up, need("ffn_up_exps.weight", {d, ff, ne}));
      MICROMOE_TENSOR(down, need("ffn_down_exps.weight", {ff, d, ne}));
      L.router = std::make_unique<router::Router>(View(*gate_inp), hp_.gating);
      for (int e = 0; e < ne; ++e) {
        const bool pack_e = options.pack_weights && (pack_mask.empty() || pack_mask[il][e]);
        L.local_experts.push_back(std::make_unique<experts::LocalExpert>(
            Matrix(*gate, e, pack_e), Matrix(*up, e, pack_e), Matrix(*down, e, pack_e)));
        expert_table_[il].push_back(L.local_experts.back().get());
      }
      if (hp_.n_ff_shared > 0) {
        const int fs = hp_.n_ff_shared;
        MICROMOE_TENSOR(sg, need("ffn_gate_inp_shexp.weight", {d}));
        MICROMOE_TENSOR(sgate, need("ffn_gate_shexp.weight", {d, fs}));
        MICROMOE_TENSOR(sup, need("ffn_up_shexp.weight", {d, fs}));
        MICROMOE_TENSOR(sdown, need("ffn_down_shexp.weight", {fs, d}));
        L.shared_gate = View(*sg);
        L.shared_gate.rows = 1;
        L.shared_expert = std::make_unique<experts::LocalExpert>(
            Matrix(*sgate, 0, pack_other), Matrix(*sup, 0, pack_other), Matrix(*sdown, 0, pack_other));
      }
    } else {
      MICROMOE_TENSOR(gate, need("ffn_gate.weight", {d, hp_.n_ff}));
      MICROMOE_TENSOR(up, need("ffn_up.weight", {d, hp_.n_ff}));
      MICROMOE_TENSOR(down, need("ffn_down.weight", {hp_.n_ff, d}));
      L.dense_ffn = std::make_unique<experts::LocalExpert>(Matrix(*gate, 0, pack_other), Matrix(*up, 0, pack_other),
                                                           Matrix(*down, 0, pack_other));
    }
#undef MICROMOE_TENSOR
  }
#undef MICROMOE_ASSIGN

  if (options.load_tokenizer) {
    auto tok = Tokenizer::FromGguf(f);
    if (!tok.ok()) return tok.status();
    tokenizer_ = std::move(*tok);
    if (tokenizer_->n_vocab() != hp_.n_vocab) {
      return absl::InvalidArgumentError(StrCat("tokenizer has ", tokenizer_->n_vocab(),
                                               " tokens but token_embd.weight has ", hp_.n_vocab, " rows"));
    }
  }
  return absl::OkStatus();
}

uint64_t Model::n_params() const {
  uint64_t n = 0;
  for (const auto& t : file_->tensors()) n += t.n_elements;
  return n;
}

}  // namespace micromoe::runtime
