// The optimised forward pass against a plain reference written here, apart
// from the runtime: weights decoded by this file's own code, double-precision
// sums, one token at a time, no batching, no threads.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/str_cat.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "runtime/forward.h"
#include "runtime/model.h"
#include "tools/model_builder.h"

namespace micromoe {
namespace {

using gguf::TensorType;

float HalfToFloat(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return static_cast<float>(sign ? -v : v);
}

// Decodes a whole tensor to floats from its GGUF bytes (F32, F16, BF16, Q8_0,
// Q4_0, Q4_1, Q5_0, Q5_1).
std::vector<double> Decode(const gguf::TensorInfo& t) {
  std::vector<double> out(t.n_elements);
  const uint8_t* p = t.data;
  switch (t.type) {
    case TensorType::kF32:
      for (uint64_t i = 0; i < t.n_elements; ++i) {
        float f;
        std::memcpy(&f, p + 4 * i, 4);
        out[i] = f;
      }
      break;
    case TensorType::kF16:
      for (uint64_t i = 0; i < t.n_elements; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      break;
    case TensorType::kBF16:
      for (uint64_t i = 0; i < t.n_elements; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        out[i] = f;
      }
      break;
    case TensorType::kQ8_0:
      for (uint64_t b = 0; b < t.n_elements / 32; ++b) {
        uint16_t d;
        std::memcpy(&d, p + 34 * b, 2);
        for (int j = 0; j < 32; ++j) out[b * 32 + j] = HalfToFloat(d) * static_cast<int8_t>(p[34 * b + 2 + j]);
      }
      break;
    case TensorType::kQ4_0:
      for (uint64_t b = 0; b < t.n_elements / 32; ++b) {
        uint16_t d;
        std::memcpy(&d, p + 18 * b, 2);
        for (int j = 0; j < 16; ++j) {
          const uint8_t q = p[18 * b + 2 + j];
          out[b * 32 + j] = HalfToFloat(d) * ((q & 15) - 8);
          out[b * 32 + j + 16] = HalfToFloat(d) * ((q >> 4) - 8);
        }
      }
      break;
    case TensorType::kQ4_1:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1: {
      // [d][m (Q4_1, Q5_1)][qh: 4 bytes, bit j = element j's 16 (Q5_*)][qs: 16 nibble pairs]
      const bool has_m = t.type != TensorType::kQ5_0, has_qh = t.type != TensorType::kQ4_1;
      const size_t bytes = 18 + (has_m ? 2 : 0) + (has_qh ? 4 : 0);
      for (uint64_t b = 0; b < t.n_elements / 32; ++b) {
        const uint8_t* blk = p + bytes * b;
        uint16_t d, m = 0;
        uint32_t qh = 0;
        std::memcpy(&d, blk, 2);
        if (has_m) std::memcpy(&m, blk + 2, 2);
        if (has_qh) std::memcpy(&qh, blk + (has_m ? 4 : 2), 4);
        const uint8_t* qs = blk + bytes - 16;
        for (int j = 0; j < 32; ++j) {
          const int q = (j < 16 ? qs[j] & 15 : qs[j - 16] >> 4) + 16 * ((qh >> j) & 1);
          out[b * 32 + j] = has_m ? HalfToFloat(d) * q + HalfToFloat(m) : HalfToFloat(d) * (q - 16);
        }
      }
      break;
    }
    default:
      ADD_FAILURE() << "reference cannot decode type " << static_cast<int>(t.type);
  }
  return out;
}

// A llama / Mixtral (or Qwen3-MoE: per-head Q/K RMSNorm, NEOX rotation)
// forward pass for one sequence, token by token.
class ReferenceModel {
 public:
  explicit ReferenceModel(const gguf::File& f) : f_(f) {
    arch_ = std::string(*f.GetString("general.architecture"));
    auto u = [&](const char* k) { return static_cast<int>(*f.GetUint(StrCat(arch_, ".", k))); };
    d_ = u("embedding_length");
    n_layer_ = u("block_count");
    n_head_ = u("attention.head_count");
    n_kv_ = u("attention.head_count_kv");
    n_expert_ = f.Find(arch_ + ".expert_count") ? u("expert_count") : 0;
    k_ = n_expert_ ? u("expert_used_count") : 0;
    hd_ = d_ / n_head_;
    base_ = static_cast<float>(*f.GetFloat(arch_ + ".rope.freq_base"));
    eps_ = static_cast<float>(*f.GetFloat(arch_ + ".attention.layer_norm_rms_epsilon"));
    kcache_.resize(n_layer_);
    vcache_.resize(n_layer_);
  }

  std::vector<double> W(const std::string& name) const { return Decode(*f_.FindTensor(name)); }

  // y = W x for W stored with ne0 = in (contiguous), ne1 = out, starting at element offset.
  static std::vector<double> MatVec(const std::vector<double>& w, const std::vector<double>& x, size_t out,
                                    size_t offset = 0) {
    std::vector<double> y(out, 0.0);
    for (size_t o = 0; o < out; ++o) {
      for (size_t i = 0; i < x.size(); ++i) y[o] += w[offset + o * x.size() + i] * x[i];
    }
    return y;
  }

  std::vector<double> Norm(const std::vector<double>& x, const std::vector<double>& w) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double s = 1.0 / std::sqrt(ss / x.size() + eps_);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * w[i];
    return y;
  }

  // Rotates pairs (2i, 2i+1) for llama; (i, i + hd/2) for NEOX-style models.
  void Rope(std::vector<double>& v, int heads, int pos) const {
    const bool neox = arch_ == "qwen3moe";
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd_ / 2; ++i) {
        const double theta = pos * std::pow(static_cast<double>(base_), -2.0 * i / hd_);
        double& a = v[h * hd_ + (neox ? i : 2 * i)];
        double& b = v[h * hd_ + (neox ? i + hd_ / 2 : 2 * i + 1)];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(theta) - b0 * std::sin(theta);
        b = a0 * std::sin(theta) + b0 * std::cos(theta);
      }
    }
  }

  void NormHeads(std::vector<double>& v, int heads, const std::vector<double>& w) const {
    for (int h = 0; h < heads; ++h) {
      std::vector<double> head(v.begin() + h * hd_, v.begin() + (h + 1) * hd_);
      head = Norm(head, w);
      std::copy(head.begin(), head.end(), v.begin() + h * hd_);
    }
  }

  std::vector<double> Ffn(const std::vector<double>& x, const std::vector<double>& g, const std::vector<double>& u,
                          const std::vector<double>& dn, size_t ff, size_t e) const {
    const auto gv = MatVec(g, x, ff, e * ff * d_);
    const auto uv = MatVec(u, x, ff, e * ff * d_);
    std::vector<double> h(ff);
    for (size_t i = 0; i < ff; ++i) h[i] = gv[i] / (1 + std::exp(-gv[i])) * uv[i];
    return MatVec(dn, h, d_, e * ff * d_);
  }

  std::vector<double> Step(int token, int pos) {
    const auto emb = W("token_embd.weight");
    std::vector<double> x(emb.begin() + static_cast<size_t>(token) * d_, emb.begin() + static_cast<size_t>(token + 1) * d_);
    const int kvd = n_kv_ * hd_;
    for (int il = 0; il < n_layer_; ++il) {
      const std::string b = StrCat("blk.", il, ".");
      const auto xn = Norm(x, W(b + "attn_norm.weight"));
      auto q = MatVec(W(b + "attn_q.weight"), xn, d_);
      auto k = MatVec(W(b + "attn_k.weight"), xn, kvd);
      auto v = MatVec(W(b + "attn_v.weight"), xn, kvd);
      if (arch_ == "qwen3moe") {
        NormHeads(q, n_head_, W(b + "attn_q_norm.weight"));
        NormHeads(k, n_kv_, W(b + "attn_k_norm.weight"));
      }
      Rope(q, n_head_, pos);
      Rope(k, n_kv_, pos);
      kcache_[il].push_back(k);
      vcache_[il].push_back(v);
      std::vector<double> att(d_, 0.0);
      for (int h = 0; h < n_head_; ++h) {
        const int kh = h / (n_head_ / n_kv_);
        std::vector<double> s(pos + 1);
        for (int t = 0; t <= pos; ++t) {
          double dot = 0;
          for (int i = 0; i < hd_; ++i) dot += q[h * hd_ + i] * kcache_[il][t][kh * hd_ + i];
          s[t] = dot / std::sqrt(static_cast<double>(hd_));
        }
        const double mx = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double& e : s) sum += e = std::exp(e - mx);
        for (int t = 0; t <= pos; ++t) {
          for (int i = 0; i < hd_; ++i) att[h * hd_ + i] += s[t] / sum * vcache_[il][t][kh * hd_ + i];
        }
      }
      const auto o = MatVec(W(b + "attn_output.weight"), att, d_);
      for (int i = 0; i < d_; ++i) x[i] += o[i];
      const auto fn = Norm(x, W(b + "ffn_norm.weight"));
      std::vector<double> ffn(d_, 0.0);
      if (n_expert_ > 0) {
        const auto logits = MatVec(W(b + "ffn_gate_inp.weight"), fn, n_expert_);
        std::vector<int> order(n_expert_);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return logits[a] > logits[c]; });
        // softmax over all, keep top k, renormalise == softmax over the top k logits
        double sum = 0;
        for (int j = 0; j < k_; ++j) sum += std::exp(logits[order[j]] - logits[order[0]]);
        const auto g = W(b + "ffn_gate_exps.weight"), u = W(b + "ffn_up_exps.weight"), dn = W(b + "ffn_down_exps.weight");
        const size_t ff = f_.FindTensor(b + "ffn_gate_exps.weight")->ne[1];
        for (int j = 0; j < k_; ++j) {
          const double w = std::exp(logits[order[j]] - logits[order[0]]) / sum;
          const auto y = Ffn(fn, g, u, dn, ff, order[j]);
          for (int i = 0; i < d_; ++i) ffn[i] += w * y[i];
        }
      } else {
        const size_t ff = f_.FindTensor(b + "ffn_gate.weight")->ne[1];
        ffn = Ffn(fn, W(b + "ffn_gate.weight"), W(b + "ffn_up.weight"), W(b + "ffn_down.weight"), ff, 0);
      }
      for (int i = 0; i < d_; ++i) x[i] += ffn[i];
    }
    const auto xn = Norm(x, W("output_norm.weight"));
    const char* head = f_.FindTensor("output.weight") ? "output.weight" : "token_embd.weight";
    return MatVec(W(head), xn, f_.FindTensor(head)->ne[1]);
  }

 private:
  const gguf::File& f_;
  std::string arch_;
  int d_, n_layer_, n_head_, n_kv_, n_expert_, k_, hd_;
  float base_, eps_;
  std::vector<std::vector<std::vector<double>>> kcache_, vcache_;
};

struct Case {
  std::string name;
  tools::TinyModelSpec spec;
  double tolerance;  // max |logit difference| allowed
};

class ReferenceForwardTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceForwardTest, PrefillAndDecodeLogitsMatchReference) {
  const Case& c = GetParam();
  gguf::Writer w;
  tools::BuildTinyModel(c.spec, &w);
  const std::string path = ::testing::TempDir() + "/ref_" + c.name + ".gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto model = runtime::Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  auto file = gguf::File::Open(path);
  ASSERT_TRUE(file.ok());
  ReferenceModel ref(**file);

  const std::vector<int32_t> tokens = {1, 300, 17, 45, 99, 260, 5, 301, 42, 7};
  const auto& hp = (*model)->hparams();
  runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, 64, 1);
  ASSERT_TRUE(kv.Start(0).ok());
  // Prefill the first 6 tokens as one batch, then decode the rest one at a time.
  const size_t n_prefill = 6;
  std::vector<runtime::BatchRow> rows;
  for (size_t i = 0; i < n_prefill; ++i) rows.push_back({tokens[i], static_cast<int32_t>(i), 0, true});
  std::vector<float> logits;
  ASSERT_TRUE(runtime::Forward(**model, rows, kv, &logits).ok());
  std::vector<std::vector<float>> got;
  for (size_t i = 0; i < n_prefill; ++i) got.emplace_back(logits.begin() + i * hp.n_vocab, logits.begin() + (i + 1) * hp.n_vocab);
  for (size_t i = n_prefill; i < tokens.size(); ++i) {
    rows = {{tokens[i], static_cast<int32_t>(i), 0, true}};
    ASSERT_TRUE(runtime::Forward(**model, rows, kv, &logits).ok());
    got.push_back(logits);
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto want = ref.Step(tokens[i], static_cast<int>(i));
    double max_diff = 0;
    for (int t = 0; t < hp.n_vocab; ++t) max_diff = std::max(max_diff, std::fabs(want[t] - got[i][t]));
    EXPECT_LT(max_diff, c.tolerance) << "position " << i;
  }
}

tools::TinyModelSpec Spec(int n_expert, TensorType type, bool tied = false, const char* arch = "llama") {
  tools::TinyModelSpec s;
  s.arch = arch;
  s.n_expert = n_expert;
  s.n_expert_used = n_expert ? 2 : 0;
  s.weight_type = type;
  s.tied_output = tied;
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Models, ReferenceForwardTest,
    ::testing::Values(Case{"moe_f32", Spec(4, TensorType::kF32), 1e-3},
                      Case{"moe_f32_tied", Spec(4, TensorType::kF32, true), 1e-3},
                      Case{"dense_f32", Spec(0, TensorType::kF32), 1e-3},
                      Case{"moe_f16", Spec(4, TensorType::kF16), 1e-3},
                      Case{"qwen3moe_f32", Spec(4, TensorType::kF32, false, "qwen3moe"), 1e-3},
                      // BF16 weights take activations rounded to BF16 (8 bits of mantissa).
                      Case{"moe_bf16", Spec(4, TensorType::kBF16), 0.02},
                      // Q8_0 / Q4_0 round activations to 8 bits inside the products.
                      Case{"moe_q8_0", Spec(4, TensorType::kQ8_0), 0.05},
                      Case{"moe_q4_0", Spec(4, TensorType::kQ4_0), 0.05},
                      Case{"moe_q4_1", Spec(4, TensorType::kQ4_1), 0.05},
                      Case{"moe_q5_0", Spec(4, TensorType::kQ5_0), 0.05},
                      Case{"moe_q5_1", Spec(4, TensorType::kQ5_1), 0.05}),
    [](const auto& info) { return info.param.name; });

// The types without an encoder (random blocks from the builder): a whole
// model's logits, prefill and decode steps (on a WorkerTeam), with the
// matrices repacked at load (on AVX-512) agree with the file layout. Rows of
// 256 so that the K-quants hold them.
TEST(ForwardRandomBlocks, RepackedWeightsGiveTheFileLayoutsLogits) {
  for (TensorType type : {TensorType::kQ2_K, TensorType::kQ3_K, TensorType::kIQ4_XS, TensorType::kIQ4_NL}) {
    tools::TinyModelSpec spec = Spec(4, type);
    spec.n_embd = 256;
    spec.n_ff = 256;
    gguf::Writer w;
    tools::BuildTinyModel(spec, &w);
    const std::string path = ::testing::TempDir() + "/random_blocks.gguf";
    ASSERT_TRUE(w.WriteFile(path).ok());
    std::vector<std::vector<float>> logits[2];
    for (int packed = 0; packed < 2; ++packed) {
      runtime::LoadOptions options;
      options.load_tokenizer = false;
      options.pack_weights = packed == 1;
      auto model = runtime::Model::Load(path, options);
      ASSERT_TRUE(model.ok()) << model.status();
      const auto& hp = (*model)->hparams();
      runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, 16, 1);
      ASSERT_TRUE(kv.Start(0).ok());
      std::vector<runtime::BatchRow> rows;
      for (int i = 0; i < 5; ++i) rows.push_back({17 * i + 1, i, 0, true});
      std::vector<float> out;
      ASSERT_TRUE(runtime::Forward(**model, rows, kv, &out).ok());
      logits[packed].push_back(out);
      for (int i = 5; i < 9; ++i) {
        ASSERT_TRUE(runtime::Forward(**model, {{13 * i, i, 0, true}}, kv, &out).ok());
        logits[packed].push_back(out);
      }
    }
    for (size_t step = 0; step < logits[0].size(); ++step) {
      double largest = 0, diff = 0;
      for (size_t t = 0; t < logits[0][step].size(); ++t) {
        largest = std::max(largest, std::fabs(static_cast<double>(logits[0][step][t])));
        diff = std::max(diff, std::fabs(static_cast<double>(logits[0][step][t]) - logits[1][step][t]));
      }
      ASSERT_GT(largest, 0) << gguf::TypeName(type);
      EXPECT_LT(diff, 1e-4 * largest) << gguf::TypeName(type) << " step " << step;
    }
  }
}

TEST(ForwardBatching, TwoSequencesInOneBatchEqualEachAlone) {
  gguf::Writer w;
  tools::BuildTinyModel(Spec(4, TensorType::kF32), &w);
  const std::string path = ::testing::TempDir() + "/batching.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto model = runtime::Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& hp = (*model)->hparams();
  const std::vector<int32_t> a = {1, 300, 17, 45}, b = {1, 99, 260};

  auto alone = [&](const std::vector<int32_t>& toks) {
    runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, 16, 1);
    EXPECT_TRUE(kv.Start(0).ok());
    std::vector<runtime::BatchRow> rows;
    for (size_t i = 0; i < toks.size(); ++i) rows.push_back({toks[i], static_cast<int32_t>(i), 0, i + 1 == toks.size()});
    std::vector<float> logits;
    EXPECT_TRUE(runtime::Forward(**model, rows, kv, &logits).ok());
    return logits;
  };
  runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, 16, 2);
  ASSERT_TRUE(kv.Start(0).ok());
  ASSERT_TRUE(kv.Start(1).ok());
  std::vector<runtime::BatchRow> rows;
  for (size_t i = 0; i < a.size(); ++i) rows.push_back({a[i], static_cast<int32_t>(i), 0, i + 1 == a.size()});
  for (size_t i = 0; i < b.size(); ++i) rows.push_back({b[i], static_cast<int32_t>(i), 1, i + 1 == b.size()});
  std::vector<float> both;
  ASSERT_TRUE(runtime::Forward(**model, rows, kv, &both).ok());
  const auto la = alone(a), lb = alone(b);
  ASSERT_EQ(both.size(), la.size() + lb.size());
  for (int t = 0; t < hp.n_vocab; ++t) {
    EXPECT_NEAR(both[t], la[t], 1e-4);
    EXPECT_NEAR(both[hp.n_vocab + t], lb[t], 1e-4);
  }
}

TEST(ForwardValidation, RejectsOutOfRangeTokenPositionAndSequence) {
  gguf::Writer w;
  tools::BuildTinyModel(Spec(4, TensorType::kF32), &w);
  const std::string path = ::testing::TempDir() + "/validation.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto model = runtime::Model::Load(path);
  ASSERT_TRUE(model.ok());
  const auto& hp = (*model)->hparams();
  runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, 8, 1);
  ASSERT_TRUE(kv.Start(0).ok());
  std::vector<float> logits;
  auto run = [&](runtime::BatchRow r) { return runtime::Forward(**model, {r}, kv, &logits); };
  EXPECT_EQ(run({hp.n_vocab, 0, 0, true}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run({-1, 0, 0, true}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run({1, 8, 0, true}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run({1, 0, 1, true}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(run({1, 0, 0, true}).ok());
}

}  // namespace
}  // namespace micromoe
