// Continuous batching: one thread owns the model's forward pass and a KV cache
// of max_sequences slots; at every step it runs the pending prompt rows of new
// sequences and the next token of every decoding sequence as ONE batch, then
// samples each sequence and hands tokens to its consumer.
//
// Thread-safety: Submit, Shutdown and Sequence methods may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/forward.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "runtime/sampler.h"

namespace micromoe::server {

struct SchedulerOptions {
  int max_sequences = 8;  // concurrent sequences; more get RESOURCE_EXHAUSTED
  int n_ctx = 2048;       // positions per sequence (capped by the model's context)
  runtime::ExpertFailurePolicy expert_failure = runtime::ExpertFailurePolicy::kFail;
};

struct SequenceRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 64;
  runtime::SamplingOptions sampling;
};

// One generation in flight. The scheduler appends tokens; the consumer takes them.
class Sequence {
 public:
  struct Update {
    std::vector<int32_t> tokens;  // new since the last Next
    bool done = false;
  };
  // Waits up to `timeout` for new tokens or the end.
  Update Next(std::chrono::milliseconds timeout);
  // Asks the scheduler to stop this sequence and free its slot at the next step.
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

  // Valid once done.
  absl::Status status() const;
  runtime::FinishReason finish() const;
  std::set<std::pair<int, int>> unavailable_experts() const;  // (layer, expert)
  double prefill_seconds() const;
  double decode_seconds() const;
  int completion_tokens() const;

 private:
  friend class Scheduler;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int32_t> pending_;
  bool done_ = false;
  absl::Status status_;
  runtime::FinishReason finish_ = runtime::FinishReason::kLength;
  std::set<std::pair<int, int>> unavailable_;
  double prefill_seconds_ = 0, decode_seconds_ = 0;
  int completion_tokens_ = 0;
  std::atomic<bool> cancelled_{false};
};

class Scheduler {
 public:
  Scheduler(const runtime::Model& model, const SchedulerOptions& options);
  ~Scheduler();  // ends every sequence (status CANCELLED) and joins the thread

  // INVALID_ARGUMENT naming the field (empty prompt, token id out of range,
  // prompt + max_tokens beyond the context, bad sampling options);
  // RESOURCE_EXHAUSTED at the sequence cap; UNAVAILABLE after Shutdown.
  absl::StatusOr<std::shared_ptr<Sequence>> Submit(SequenceRequest request);

  // Stops accepting; sequences in flight go on until they finish.
  void StopAccepting();
  int active() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Slot {
    std::shared_ptr<Sequence> seq;
    SequenceRequest request;
    std::unique_ptr<runtime::Sampler> sampler;
    int n_past = 0;           // positions written to the KV cache
    int32_t last_token = -1;  // sampled, not yet in the cache
    int generated = 0;
    std::chrono::steady_clock::time_point start, first_token;
  };
  void Loop();
  void Finish(int slot, absl::Status status, runtime::FinishReason reason);

  const runtime::Model& model_;
  SchedulerOptions options_;
  runtime::KvCache kv_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Slot>> slots_;  // index = KV cache slot; null when free
  bool accepting_ = true;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace micromoe::server
