// Experts that live on other nodes, reached over micromoe.v1.ExpertHost.
//
// A RemoteGroup is one endpoint list (a node and its replicas). All experts of
// one layer that a batch routes to the group travel in ONE ForwardRequest over a
// long-lived ForwardStream per endpoint (pooled: concurrent callers each take
// a stream of their own). The calling thread drives its stream's completion
// queue itself, so a reply costs no thread hand-off. Each attempt has a
// deadline; an endpoint that fails or times out is skipped for retry_after_ms
// and the next replica is tried. A watcher thread per endpoint keeps its
// channel reconnecting, so a node that comes back is used again once its
// back-off ends, without restarting anything.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "experts/expert.h"
#include "experts/placement.h"

namespace grpc {
class Channel;
}

namespace micromoe::v1 {
class ForwardRequest;
class ForwardResponse;
}  // namespace micromoe::v1

namespace micromoe::experts {

// Limits shared by both ends of ExpertHost.
constexpr int64_t kMaxRowsPerExpert = 65536;
constexpr int kMaxMessageBytes = 512 << 20;

// Per-request failures inside a ForwardStream travel in ForwardResponse.error
// as "CODE_NAME: message" (e.g. "NOT_FOUND: layer 0 expert 3 is not held here").
std::string EncodeStreamError(const absl::Status& status);
absl::Status DecodeStreamError(const std::string& error);

namespace internal {
class StreamCall;
}  // namespace internal

// One expert node address with its channel, its pool of open streams, its
// health and a watcher thread (stopped by the destructor, within ~50 ms).
// Shared by every group that names the address. Thread-safe.
class RemoteEndpoint {
 public:
  RemoteEndpoint(std::string address, const PlacementOptions& options);
  ~RemoteEndpoint();
  RemoteEndpoint(const RemoteEndpoint&) = delete;
  RemoteEndpoint& operator=(const RemoteEndpoint&) = delete;

  const std::string& address() const { return address_; }

  // True while the endpoint is in its retry_after_ms back-off after a failure.
  bool IsDown(std::chrono::steady_clock::time_point now) const;
  // Milliseconds of back-off left (0 when up).
  int64_t DownForMs(std::chrono::steady_clock::time_point now) const;
  void MarkDown(const absl::Status& why);
  void MarkUp();

  // Sends `request` and waits for the reply until `deadline`, over a pooled
  // stream (a pooled stream found broken is retried once on a fresh one), or
  // a unary call when use_stream is false. Transport failures come back as
  // UNAVAILABLE or DEADLINE_EXCEEDED; a node's refusal (NOT_FOUND,
  // INVALID_ARGUMENT) comes back in the reply's `error`.
  absl::Status Call(const v1::ForwardRequest& request, v1::ForwardResponse* response,
                    std::chrono::steady_clock::time_point deadline, bool use_stream);

 private:
  struct Stub;
  // Keeps the channel connecting while it is not ready, until stop_.
  void Watch();
  std::unique_ptr<internal::StreamCall> Acquire(bool* reused);
  void Release(std::unique_ptr<internal::StreamCall> call);

  const std::string address_;
  const int retry_after_ms_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Stub> stub_;
  std::mutex mu_;
  std::vector<std::unique_ptr<internal::StreamCall>> idle_;  // guarded by mu_
  std::atomic<int64_t> down_until_ns_{0};                     // steady clock
  std::atomic<bool> down_{false};
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

// Experts reachable through one endpoint list (primary first). Thread-safe.
class RemoteGroup final : public ExpertGroup {
 public:
  RemoteGroup(std::vector<std::shared_ptr<RemoteEndpoint>> endpoints, int64_t dim, const PlacementOptions& options,
              bool use_stream = true);

  // One ForwardRequest for all calls (rows as little-endian F32), sent to the
  // first endpoint not in back-off; on failure the next. UNAVAILABLE naming
  // every endpoint when none answered; NOT_FOUND / INVALID_ARGUMENT when a node
  // answered that it cannot run the request (a placement error).
  absl::Status ForwardBatch(int layer, const std::vector<ExpertCall>& calls) override;
  // Runs ForwardBatch on this group's own long-lived thread (a new thread per
  // call costs more than the round trip on a busy machine).
  std::future<absl::Status> StartBatch(int layer, std::vector<ExpertCall> calls) override;
  ~RemoteGroup() override;

  int64_t dim() const { return dim_; }
  std::string Describe() const;  // "a, b" (the endpoint addresses)

 private:
  const std::vector<std::shared_ptr<RemoteEndpoint>> endpoints_;
  const int64_t dim_;
  const PlacementOptions options_;
  const bool use_stream_;
  std::atomic<uint64_t> next_request_id_{1};

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::packaged_task<absl::Status()>> queue_;  // guarded by queue_mu_
  bool stopping_ = false;                                 // guarded by queue_mu_
  std::thread worker_;
};

// Expert `expert` of `layer` on a RemoteGroup; Forward is a one-expert batch.
class RemoteExpert final : public Expert {
 public:
  RemoteExpert(RemoteGroup* group, int layer, int expert) : group_(group), layer_(layer), expert_(expert) {}
  absl::Status Forward(const float* in, int64_t n_rows, float* out) const override;
  int64_t dim() const override { return group_->dim(); }
  ExpertGroup* group() const override { return group_; }

 private:
  RemoteGroup* group_;
  int layer_, expert_;
};

}  // namespace micromoe::experts
