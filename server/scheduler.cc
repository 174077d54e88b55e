#include "server/scheduler.h"

#include <algorithm>

#include "base/str_cat.h"

namespace micromoe::server {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Sequence::Update Sequence::Next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !pending_.empty() || done_; });
  Update u;
  u.tokens.assign(pending_.begin(), pending_.end());
  pending_.clear();
  u.done = done_;
  return u;
}

absl::Status Sequence::status() const { std::lock_guard<std::mutex> l(mu_); return status_; }
runtime::FinishReason Sequence::finish() const { std::lock_guard<std::mutex> l(mu_); return finish_; }
std::set<std::pair<int, int>> Sequence::unavailable_experts() const { std::lock_guard<std::mutex> l(mu_); return unavailable_; }
double Sequence::prefill_seconds() const { std::lock_guard<std::mutex> l(mu_); return prefill_seconds_; }
double Sequence::decode_seconds() const { std::lock_guard<std::mutex> l(mu_); return decode_seconds_; }
int Sequence::completion_tokens() const { std::lock_guard<std::mutex> l(mu_); return completion_tokens_; }

Scheduler::Scheduler(const runtime::Model& model, const SchedulerOptions& options)
    : model_(model),
      options_(options),
      kv_(model.hparams().n_layer, model.hparams().n_head_kv, model.hparams().head_dim,
          std::min(options.n_ctx, model.hparams().n_ctx_train), options.max_sequences),
      slots_(options.max_sequences) {
  options_.n_ctx = kv_.n_ctx();
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    accepting_ = false;
  }
  cv_.notify_all();
  thread_.join();
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i]) Finish(static_cast<int>(i), absl::CancelledError("the server is shutting down"), runtime::FinishReason::kCancelled);
  }
}

void Scheduler::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

int Scheduler::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s != nullptr; }));
}

absl::StatusOr<std::shared_ptr<Sequence>> Scheduler::Submit(SequenceRequest request) {
  const int n_vocab = model_.hparams().n_vocab;
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt: empty (give prompt text or prompt_token_ids)");
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    if (request.prompt[i] < 0 || request.prompt[i] >= n_vocab) {
      return absl::InvalidArgumentError(StrCat("prompt_token_ids[", i, "] = ", request.prompt[i],
                                               " is outside the vocabulary [0, ", n_vocab, ")"));
    }
  }
  if (request.max_tokens < 1) return absl::InvalidArgumentError(StrCat("max_tokens: ", request.max_tokens, " must be >= 1"));
  if (static_cast<int64_t>(request.prompt.size()) + request.max_tokens > options_.n_ctx) {
    return absl::InvalidArgumentError(StrCat("max_tokens: prompt (", request.prompt.size(), " tokens) + max_tokens (",
                                             request.max_tokens, ") exceeds the context of ", options_.n_ctx));
  }
  if (auto s = runtime::ValidateSamplingOptions(request.sampling); !s.ok()) {
    return absl::InvalidArgumentError(StrCat("sampling: ", s.message()));
  }
  auto seq = std::make_shared<Sequence>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return absl::UnavailableError("the server is shutting down");
    auto free = std::find(slots_.begin(), slots_.end(), nullptr);
    if (free == slots_.end()) {
      return absl::ResourceExhaustedError(StrCat("all ", options_.max_sequences,
                                                 " sequence slots are busy; retry later"));
    }
    const int index = static_cast<int>(free - slots_.begin());
    if (auto s = kv_.Start(index); !s.ok()) return s;
    auto slot = std::make_unique<Slot>();
    slot->seq = seq;
    slot->sampler = std::make_unique<runtime::Sampler>(request.sampling);
    slot->request = std::move(request);
    slot->start = std::chrono::steady_clock::now();
    *free = std::move(slot);
  }
  cv_.notify_all();
  return seq;
}

void Scheduler::Finish(int index, absl::Status status, runtime::FinishReason reason) {
  Slot& slot = *slots_[index];
  {
    std::lock_guard<std::mutex> l(slot.seq->mu_);
    slot.seq->status_ = std::move(status);
    slot.seq->finish_ = reason;
    slot.seq->done_ = true;
    slot.seq->completion_tokens_ = slot.generated;
    if (slot.generated > 0) slot.seq->decode_seconds_ = Since(slot.first_token);
  }
  slot.seq->cv_.notify_all();
  std::lock_guard<std::mutex> lock(mu_);
  kv_.Release(index);
  slots_[index].reset();
}

void Scheduler::Loop() {
  const runtime::Tokenizer* tok = model_.has_tokenizer() ? &model_.tokenizer() : nullptr;
  runtime::ForwardOptions forward_options;
  forward_options.expert_failure = options_.expert_failure;
  std::vector<runtime::BatchRow> rows;
  std::vector<int> row_slot;     // batch row -> slot
  std::vector<int> logit_slots;  // slots in the order of their logits rows
  std::vector<float> logits;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_ || std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s != nullptr; });
      });
      if (stop_) return;
    }
    // Slots only get filled by Submit (never emptied by others), so reading them here is safe.
    rows.clear();
    row_slot.clear();
    logit_slots.clear();
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot* s;
      {
        std::lock_guard<std::mutex> lock(mu_);
        s = slots_[i].get();
      }
      if (s == nullptr) continue;
      if (s->seq->cancelled()) {
        Finish(static_cast<int>(i), absl::CancelledError("cancelled by the client"), runtime::FinishReason::kCancelled);
        continue;
      }
      const int32_t seq = static_cast<int32_t>(i);
      if (s->n_past == 0) {
        const auto& p = s->request.prompt;
        for (size_t j = 0; j < p.size(); ++j) {
          rows.push_back({p[j], static_cast<int32_t>(j), seq, j + 1 == p.size()});
          row_slot.push_back(static_cast<int>(i));
        }
      } else {
        rows.push_back({s->last_token, s->n_past, seq, true});
        row_slot.push_back(static_cast<int>(i));
      }
      logit_slots.push_back(static_cast<int>(i));
    }
    if (rows.empty()) continue;

    runtime::ForwardReport report;
    const absl::Status st = runtime::Forward(model_, rows, kv_, &logits, forward_options, &report);
    if (!st.ok()) {
      for (int i : logit_slots) Finish(i, st, runtime::FinishReason::kCancelled);
      continue;
    }
    for (const auto& d : report.dropped) {
      for (int r : d.rows) {
        Slot& s = *slots_[row_slot[r]];
        std::lock_guard<std::mutex> l(s.seq->mu_);
        s.seq->unavailable_.insert({d.layer, d.expert});
      }
    }
    const int n_vocab = model_.hparams().n_vocab;
    for (size_t k = 0; k < logit_slots.size(); ++k) {
      const int i = logit_slots[k];
      Slot& s = *slots_[i];
      s.n_past = s.n_past == 0 ? static_cast<int>(s.request.prompt.size()) : s.n_past + 1;
      const int32_t next = s.sampler->Sample(logits.data() + k * n_vocab, n_vocab);
      if (s.generated == 0) {
        s.first_token = std::chrono::steady_clock::now();
        std::lock_guard<std::mutex> l(s.seq->mu_);
        s.seq->prefill_seconds_ = Since(s.start);
      }
      if (tok && tok->IsEndOfGeneration(next)) {
        Finish(i, absl::OkStatus(), runtime::FinishReason::kEndOfSequence);
        continue;
      }
      ++s.generated;
      s.last_token = next;
      {
        std::lock_guard<std::mutex> l(s.seq->mu_);
        s.seq->pending_.push_back(next);
      }
      s.seq->cv_.notify_all();
      if (s.generated >= s.request.max_tokens || s.n_past >= options_.n_ctx) {
        Finish(i, absl::OkStatus(), runtime::FinishReason::kLength);
      }
    }
  }
}

}  // namespace micromoe::server
