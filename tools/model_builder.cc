#include "tools/model_builder.h"

#include <cstring>
#include <random>

#include "base/str_cat.h"
#include "kernels/quant.h"
#include "kernels/quantize.h"

namespace micromoe::tools {
namespace {

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space mark

class TensorFactory {
 public:
  TensorFactory(const TinyModelSpec& spec, gguf::Writer* w) : spec_(spec), w_(w), rng_(spec.seed) {}

  void Matrix(const std::string& name, std::vector<uint64_t> ne, float scale) {
    const uint64_t cols = ne[0];
    uint64_t rows = 1;
    for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
    if (!kernels::CanQuantizeTo(spec_.weight_type)) {
      w_->AddTensor(name, spec_.weight_type, ne, RandomBlocks(cols * rows, scale));
      return;
    }
    std::vector<float> v(cols * rows);
    std::uniform_real_distribution<float> u(-scale, scale);
    for (float& x : v) x = u(rng_);
    w_->AddTensor(name, spec_.weight_type, ne,
                  kernels::QuantizeTensor(spec_.weight_type, v.data(), static_cast<int64_t>(rows), static_cast<int64_t>(cols)));
  }

  void Vector(const std::string& name, uint64_t n, float center, float spread) {
    std::vector<float> v(n);
    std::uniform_real_distribution<float> u(center - spread, center + spread);
    for (float& x : v) x = u(rng_);
    w_->AddTensor(name, gguf::TensorType::kF32, {n},
                  kernels::QuantizeTensor(gguf::TensorType::kF32, v.data(), 1, static_cast<int64_t>(n)));
  }

 private:
  // The types micromoe has no encoder for (Q2_K, Q3_K, IQ4_NL, IQ4_XS): random
  // bytes, with each block's scale set so that values stay within about
  // +-scale (the largest quant times the largest sub-block scale); Q2_K's
  // dmin is 1.5 d, which centres its values (mean quant 1.5, scales and mins
  // alike), as trained weights are.
  std::vector<uint8_t> RandomBlocks(uint64_t n, float scale) {
    const gguf::TypeTraits* t = gguf::FindTypeTraits(static_cast<uint32_t>(spec_.weight_type));
    std::vector<uint8_t> bytes(n / t->block_elements * t->block_bytes);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng_());
    uint64_t d_at = 0, dmin_at = 0;  // byte offsets within a block (dmin_at 0: none)
    float largest = 1;               // the largest |value| / d of a block
    switch (spec_.weight_type) {
      case gguf::TensorType::kQ2_K: d_at = 80, dmin_at = 82, largest = 45; break;
      case gguf::TensorType::kQ3_K: d_at = 108, largest = 128; break;
      case gguf::TensorType::kIQ4_NL: largest = 127; break;
      case gguf::TensorType::kIQ4_XS: largest = 32 * 127; break;
      default: break;
    }
    const uint16_t d = kernels::Fp32ToFp16(scale / largest), dmin = kernels::Fp32ToFp16(1.5f * scale / largest);
    for (uint64_t b = 0; b < bytes.size(); b += t->block_bytes) {
      std::memcpy(&bytes[b + d_at], &d, 2);
      if (dmin_at) std::memcpy(&bytes[b + dmin_at], &dmin, 2);
    }
    return bytes;
  }

  const TinyModelSpec& spec_;
  gguf::Writer* w_;
  std::mt19937_64 rng_;
};

}  // namespace

std::vector<std::string> TinyVocabulary() {
  std::vector<std::string> v = {"<unk>", "<s>", "</s>"};
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.push_back(buf);
  }
  v.push_back(kSpace);
  for (char c = 33; c < 127; ++c) v.push_back(std::string(1, c));
  for (const char* w : {"the", "and", "of", "to", "in", "is", "that", "it", "for", "on", "with", "as",
                        "license", "software", "free", "program", "code", "you", "this", "be"}) {
    v.push_back(StrCat(kSpace, w));
    v.push_back(w);
  }
  for (const char* p : {"th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "es", "or"}) v.push_back(p);
  return v;
}

void BuildTinyModel(const TinyModelSpec& s, gguf::Writer* w) {
  const std::string a = s.arch;
  std::vector<std::string> vocab = TinyVocabulary();
  for (int i = static_cast<int>(vocab.size()); i < s.n_vocab; ++i) vocab.push_back(StrCat("<extra_", i, ">"));
  const uint64_t n_vocab = vocab.size();
  w->SetString("general.architecture", a);
  w->SetString("general.name", StrCat("micromoe-tiny-", s.n_expert, "x", s.n_embd));
  w->SetU32(a + ".context_length", s.n_ctx);
  w->SetU32(a + ".embedding_length", s.n_embd);
  w->SetU32(a + ".block_count", s.n_layer);
  w->SetU32(a + ".feed_forward_length", s.n_ff);
  if (a == "qwen3moe") w->SetU32(a + ".expert_feed_forward_length", s.n_ff);
  w->SetU32(a + ".attention.head_count", s.n_head);
  w->SetU32(a + ".attention.head_count_kv", s.n_head_kv);
  w->SetF32(a + ".rope.freq_base", s.rope_base);
  w->SetU32(a + ".rope.dimension_count", s.n_embd / s.n_head);
  w->SetF32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  if (s.n_expert > 0) {
    w->SetU32(a + ".expert_count", s.n_expert);
    w->SetU32(a + ".expert_used_count", s.n_expert_used);
  }
  w->SetString("tokenizer.ggml.model", "llama");
  w->SetStringArray("tokenizer.ggml.tokens", vocab);
  std::vector<float> scores(n_vocab, 0.0f);
  std::vector<int32_t> types(n_vocab, 1);
  types[0] = 2;
  types[1] = types[2] = 3;
  for (int b = 0; b < 256; ++b) types[3 + b] = 6;
  // Longer pieces score higher so merges prefer them.
  for (uint64_t i = 259; i < n_vocab; ++i) scores[i] = -1000.0f + static_cast<float>(vocab[i].size()) * 10 - i * 0.01f;
  w->SetF32Array("tokenizer.ggml.scores", scores);
  w->SetI32Array("tokenizer.ggml.token_type", types);
  w->SetU32("tokenizer.ggml.bos_token_id", 1);
  w->SetU32("tokenizer.ggml.eos_token_id", 2);
  w->SetU32("tokenizer.ggml.unknown_token_id", 0);
  w->SetBool("tokenizer.ggml.add_bos_token", true);

  TensorFactory f(s, w);
  const uint64_t d = s.n_embd, hd = s.n_embd / s.n_head, kvd = hd * s.n_head_kv, ff = s.n_ff;
  const float sc = s.weight_scale;
  f.Matrix("token_embd.weight", {d, n_vocab}, 1.0f);
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string b = StrCat("blk.", il, ".");
    f.Vector(b + "attn_norm.weight", d, 1.0f, 0.2f);
    if (a == "qwen3moe") {  // per-head Q/K RMSNorm
      f.Vector(b + "attn_q_norm.weight", hd, 1.0f, 0.2f);
      f.Vector(b + "attn_k_norm.weight", hd, 1.0f, 0.2f);
    }
    f.Matrix(b + "attn_q.weight", {d, d}, sc);
    f.Matrix(b + "attn_k.weight", {d, kvd}, sc);
    f.Matrix(b + "attn_v.weight", {d, kvd}, sc);
    f.Matrix(b + "attn_output.weight", {d, d}, sc);
    f.Vector(b + "ffn_norm.weight", d, 1.0f, 0.2f);
    if (s.n_expert > 0) {
      const uint64_t ne = s.n_expert;
      f.Matrix(b + "ffn_gate_inp.weight", {d, ne}, 0.5f);
      f.Matrix(b + "ffn_gate_exps.weight", {d, ff, ne}, sc);
      f.Matrix(b + "ffn_down_exps.weight", {ff, d, ne}, sc);
      f.Matrix(b + "ffn_up_exps.weight", {d, ff, ne}, sc);
    } else {
      f.Matrix(b + "ffn_gate.weight", {d, ff}, sc);
      f.Matrix(b + "ffn_down.weight", {ff, d}, sc);
      f.Matrix(b + "ffn_up.weight", {d, ff}, sc);
    }
  }
  f.Vector("output_norm.weight", d, 1.0f, 0.2f);
  if (!s.tied_output) f.Matrix("output.weight", {d, n_vocab}, sc);
}

}  // namespace micromoe::tools
