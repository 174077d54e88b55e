#include "runtime/generate.h"

#include <chrono>
#include <cmath>

#include "base/str_cat.h"
#include "runtime/forward.h"

namespace micromoe::runtime {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Expected length of a UTF-8 sequence from its lead byte; 0 for a byte that cannot lead.
int Utf8Length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

}  // namespace

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kEndOfSequence: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

absl::StatusOr<GenerateResult> Generate(const Model& model, const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options,
                                        const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (options.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  if (auto s = ValidateSamplingOptions(options.sampling); !s.ok()) return s;
  const int train_ctx = model.hparams().n_ctx_train;
  const int64_t wanted = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  const int n_ctx = options.n_ctx > 0 ? options.n_ctx : static_cast<int>(std::min<int64_t>(wanted, train_ctx));
  if (static_cast<int64_t>(prompt.size()) >= n_ctx || n_ctx > train_ctx) {
    return absl::InvalidArgumentError(StrCat("the prompt has ", prompt.size(), " tokens; the context holds ",
                                             std::min(n_ctx, train_ctx), " (model trained for ", train_ctx, ")"));
  }
  const HParams& hp = model.hparams();
  KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, n_ctx, 1);
  if (auto s = kv.Start(0); !s.ok()) return s;
  Sampler sampler(options.sampling);
  GenerateResult result;

  std::vector<BatchRow> rows(prompt.size());
  for (size_t i = 0; i < prompt.size(); ++i) {
    rows[i] = {prompt[i], static_cast<int32_t>(i), 0, i + 1 == prompt.size()};
  }
  std::vector<float> logits;
  auto start = std::chrono::steady_clock::now();
  if (auto s = Forward(model, rows, kv, &logits); !s.ok()) return s;
  result.prefill_seconds = Seconds(start);

  start = std::chrono::steady_clock::now();
  int pos = static_cast<int>(prompt.size());
  const Tokenizer* tok = model.has_tokenizer() ? &model.tokenizer() : nullptr;
  for (int i = 0; i < options.max_tokens; ++i) {
    const int32_t next = sampler.Sample(logits.data(), hp.n_vocab);
    if (tok && tok->IsEndOfGeneration(next)) {
      result.finish = FinishReason::kEndOfSequence;
      break;
    }
    result.tokens.push_back(next);
    if (!on_token(next)) {
      result.finish = FinishReason::kCancelled;
      break;
    }
    if (i + 1 == options.max_tokens || pos >= n_ctx) break;
    rows.assign(1, {next, pos++, 0, true});
    if (auto s = Forward(model, rows, kv, &logits); !s.ok()) return s;
  }
  result.decode_seconds = Seconds(start);
  return result;
}

absl::StatusOr<PerplexityResult> Perplexity(const Model& model, const std::vector<int32_t>& tokens,
                                            int n_ctx,
                                            const std::function<void(int, double)>& on_chunk) {
  const HParams& hp = model.hparams();
  if (n_ctx < 4 || n_ctx > hp.n_ctx_train) {
    return absl::InvalidArgumentError(StrCat("context ", n_ctx, " must be between 4 and the model's ", hp.n_ctx_train));
  }
  const int n_chunks = static_cast<int>(tokens.size() / n_ctx);
  if (n_chunks == 0) {
    return absl::InvalidArgumentError(StrCat("the text has ", tokens.size(), " tokens, fewer than one chunk of ", n_ctx));
  }
  const bool add_bos = model.has_tokenizer() && model.tokenizer().add_bos();
  const int first = n_ctx / 2;
  KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, n_ctx, 1);
  double nll = 0, nll2 = 0;
  uint64_t count = 0;
  std::vector<BatchRow> rows(n_ctx);
  std::vector<float> logits;
  for (int c = 0; c < n_chunks; ++c) {
    if (auto s = kv.Start(0); !s.ok()) return s;
    const int32_t* chunk = tokens.data() + static_cast<size_t>(c) * n_ctx;
    for (int i = 0; i < n_ctx; ++i) rows[i] = {chunk[i], i, 0, i >= first && i < n_ctx - 1};
    if (add_bos) rows[0].token = model.tokenizer().bos_id();
    if (auto s = Forward(model, rows, kv, &logits); !s.ok()) return s;
    for (int i = first; i < n_ctx - 1; ++i) {
      const float* l = logits.data() + static_cast<size_t>(i - first) * hp.n_vocab;
      const float mx = *std::max_element(l, l + hp.n_vocab);
      double sum = 0;
      for (int t = 0; t < hp.n_vocab; ++t) sum += std::exp(static_cast<double>(l[t] - mx));
      const double v = std::log(sum) - (l[chunk[i + 1]] - mx);
      nll += v;
      nll2 += v * v;
      ++count;
    }
    on_chunk(c, std::exp(nll / count));
  }
  PerplexityResult r;
  r.n_chunks = n_chunks;
  r.n_scored = count;
  const double mean = nll / count, mean2 = nll2 / count;
  r.ppl = std::exp(mean);
  const double var = mean2 - mean * mean;
  r.ppl_stderr = (count > 1 && var > 0) ? std::sqrt(var / (count - 1)) * r.ppl : 0;
  return r;
}

std::string Utf8Stream::Push(std::string_view bytes) {
  pending_.append(bytes.data(), bytes.size());
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const unsigned char c = pending_[i];
    const int len = Utf8Length(c);
    // Checks continuation byte j of the sequence at i (RFC 3629 ranges: no
    // overlongs, no surrogates, nothing above U+10FFFF).
    auto continuation_ok = [&](size_t j) {
      const unsigned char b = pending_[i + j];
      if ((b & 0xC0) != 0x80) return false;
      if (j != 1) return true;
      if (c == 0xE0) return b >= 0xA0;
      if (c == 0xED) return b <= 0x9F;
      if (c == 0xF0) return b >= 0x90;
      if (c == 0xF4) return b <= 0x8F;
      return true;
    };
    size_t good = 1;
    while (len > 0 && good < static_cast<size_t>(len) && i + good < pending_.size() && continuation_ok(good)) ++good;
    if (len > 0 && good == static_cast<size_t>(len)) {
      out.append(pending_, i, len);
      i += len;
    } else if (len > 0 && i + good == pending_.size()) {
      break;  // a valid prefix: wait for the rest
    } else {
      out += "\xEF\xBF\xBD";  // invalid lead or continuation
      ++i;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::Flush() {
  std::string out;
  for (size_t i = 0; i < pending_.size(); ++i) out += "\xEF\xBF\xBD";
  pending_.clear();
  return out;
}

}  // namespace micromoe::runtime
