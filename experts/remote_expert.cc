#include "experts/remote_expert.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "base/str_cat.h"
#include "micromoe.grpc.pb.h"

namespace micromoe::experts {

// Rows are copied to and from the wire with memcpy: that is little-endian only
// on a little-endian host.
static_assert(std::endian::native == std::endian::little, "ExpertHost rows are little-endian");

using Clock = std::chrono::steady_clock;

namespace {

std::chrono::system_clock::time_point ToSystem(Clock::time_point t) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(t - Clock::now());
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// Answers by which a node says it cannot run the request (it is alive).
bool IsNodeVerdict(absl::StatusCode code) {
  return code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInvalidArgument;
}

}  // namespace

std::string EncodeStreamError(const absl::Status& status) {
  return StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

absl::Status DecodeStreamError(const std::string& error) {
  const size_t colon = error.find(": ");
  if (colon != std::string::npos) {
    const std::string name = error.substr(0, colon);
    for (int c = 1; c <= 16; ++c) {
      const auto code = static_cast<absl::StatusCode>(c);
      if (absl::StatusCodeToString(code) == name) return absl::Status(code, error.substr(colon + 2));
    }
  }
  return absl::UnknownError(error);
}

namespace internal {

// One ForwardStream on its own completion queue, which the thread running a
// round trip drives itself (AsyncNext with the deadline): no hand-off to
// another thread on the way back, and no wait without a deadline. Used by one
// thread at a time (the endpoint's pool hands it over under a mutex).
class StreamCall {
 public:
  explicit StreamCall(v1::ExpertHost::Stub* stub) {
    stream_ = stub->PrepareAsyncForwardStream(&ctx_, &cq_);
    stream_->StartCall(Tag(kStart));
    pending_[kStart] = true;
  }
  StreamCall(const StreamCall&) = delete;
  StreamCall& operator=(const StreamCall&) = delete;

  bool broken() const { return broken_; }

  // Sends `request` and waits until `deadline` for its reply. After a failure
  // the stream is broken and must be closed.
  absl::Status RoundTrip(const v1::ForwardRequest& request, v1::ForwardResponse* response,
                         Clock::time_point deadline) {
    if (broken_) return absl::UnavailableError("stream closed");
    if (pending_[kStart]) {
      if (absl::Status s = WaitFor({kStart}, deadline); !s.ok()) return s;
    }
    stream_->Write(request, Tag(kWrite));  // serialises `request` now
    pending_[kWrite] = true;
    stream_->Read(&response_, Tag(kRead));
    pending_[kRead] = true;
    if (absl::Status s = WaitFor({kWrite, kRead}, deadline); !s.ok()) return s;
    response->Swap(&response_);
    return absl::OkStatus();
  }

  // Cancels the call and collects every outstanding completion, waiting at
  // most ~2 s. False when that bound passed: the call must then be leaked,
  // not destroyed (gRPC may still write into it).
  bool Close() {
    if (closed_) return true;
    ctx_.TryCancel();
    if (!finish_started_) {
      stream_->Finish(&status_, Tag(kFinish));
      finish_started_ = true;
      pending_[kFinish] = true;
    }
    const Clock::time_point bound = Clock::now() + std::chrono::seconds(2);
    while (pending_[kStart] || pending_[kWrite] || pending_[kRead] || pending_[kFinish]) {
      void* tag = nullptr;
      bool ok = false;
      if (cq_.AsyncNext(&tag, &ok, ToSystem(bound)) != grpc::CompletionQueue::GOT_EVENT) return false;
      pending_[Index(tag)] = false;
    }
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
    closed_ = true;
    return true;
  }

 private:
  enum Op { kStart, kWrite, kRead, kFinish, kOps };
  static void* Tag(Op op) { return reinterpret_cast<void*>(static_cast<intptr_t>(op) + 1); }
  static int Index(void* tag) { return static_cast<int>(reinterpret_cast<intptr_t>(tag) - 1); }

  // Waits for the completions of `ops`. A failed one breaks the stream; the
  // call's status (asked for with Finish, bounded by `deadline`) says why.
  absl::Status WaitFor(std::initializer_list<Op> ops, Clock::time_point deadline) {
    auto waiting = [&] {
      for (Op op : ops) {
        if (pending_[op]) return true;
      }
      return false;
    };
    bool failed = false;
    while (waiting()) {
      void* tag = nullptr;
      bool ok = false;
      const auto r = cq_.AsyncNext(&tag, &ok, ToSystem(deadline));
      if (r == grpc::CompletionQueue::TIMEOUT) {
        broken_ = true;
        ctx_.TryCancel();
        return absl::DeadlineExceededError("no reply before the deadline");
      }
      if (r != grpc::CompletionQueue::GOT_EVENT) {
        broken_ = true;
        return absl::UnavailableError("completion queue shut down");
      }
      pending_[Index(tag)] = false;
      failed |= !ok;
    }
    if (!failed) return absl::OkStatus();
    broken_ = true;
    // The stream ended; its status follows shortly.
    if (!finish_started_) {
      stream_->Finish(&status_, Tag(kFinish));
      finish_started_ = true;
      pending_[kFinish] = true;
    }
    while (pending_[kFinish]) {
      void* tag = nullptr;
      bool ok = false;
      if (cq_.AsyncNext(&tag, &ok, ToSystem(deadline)) != grpc::CompletionQueue::GOT_EVENT) {
        return absl::UnavailableError("stream closed");
      }
      pending_[Index(tag)] = false;
    }
    if (status_.ok()) return absl::UnavailableError("stream closed by the node");
    return absl::Status(status_.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? absl::StatusCode::kDeadlineExceeded
                                                                                    : absl::StatusCode::kUnavailable,
                        StrCat("stream closed: ", absl::StatusCodeToString(FromGrpc(status_).code()), ": ",
                               status_.error_message()));
  }

  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::ForwardRequest, v1::ForwardResponse>> stream_;
  v1::ForwardResponse response_;
  grpc::Status status_;
  bool pending_[kOps] = {};
  bool broken_ = false, finish_started_ = false, closed_ = false;
};

}  // namespace internal

namespace {

// Closes a stream; one that cannot be closed in time is leaked rather than
// freed under gRPC's feet.
void Discard(std::unique_ptr<internal::StreamCall> call) {
  if (call && !call->Close()) {
    std::fprintf(stderr, "warning: an expert stream did not close in time; leaking it\n");
    static_cast<void>(call.release());
  }
}

}  // namespace

struct RemoteEndpoint::Stub {
  std::unique_ptr<v1::ExpertHost::Stub> stub;
};

RemoteEndpoint::RemoteEndpoint(std::string address, const PlacementOptions& options)
    : address_(std::move(address)), retry_after_ms_(options.retry_after_ms), stub_(std::make_unique<Stub>()) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect attempts at least once per back-off period, so a node that
  // comes back is reachable when its retry_after_ms ends.
  const int backoff = std::max(100, options.retry_after_ms);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(backoff, 1000));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(backoff, 1000));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, backoff);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  stub_->stub = v1::ExpertHost::NewStub(channel_);
  watcher_ = std::thread([this] { Watch(); });
}

void RemoteEndpoint::Watch() {
  // Round trips poll only their own stream's queue, so without this a channel
  // in TRANSIENT_FAILURE would never see its reconnection finish.
  const auto reset_every = std::chrono::milliseconds(std::max(50, retry_after_ms_ / 2));
  Clock::time_point last_reset;
  while (!stop_.load(std::memory_order_relaxed)) {
    const grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE && Clock::now() - last_reset >= reset_every) {
      grpc::experimental::ChannelResetConnectionBackoff(channel_.get());
      last_reset = Clock::now();
    }
    channel_->WaitForStateChange(state, std::chrono::system_clock::now() + std::chrono::milliseconds(50));
  }
}

RemoteEndpoint::~RemoteEndpoint() {
  stop_.store(true);
  watcher_.join();
  std::vector<std::unique_ptr<internal::StreamCall>> idle;
  {
    std::lock_guard<std::mutex> l(mu_);
    idle.swap(idle_);
  }
  for (auto& c : idle) Discard(std::move(c));
}

bool RemoteEndpoint::IsDown(Clock::time_point now) const { return DownForMs(now) > 0; }

int64_t RemoteEndpoint::DownForMs(Clock::time_point now) const {
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  const int64_t left = down_until_ns_.load(std::memory_order_relaxed) - now_ns;
  return left > 0 ? (left + 999999) / 1000000 : 0;
}

void RemoteEndpoint::MarkDown(const absl::Status& why) {
  down_until_ns_.store(NowNs() + int64_t{retry_after_ms_} * 1000000, std::memory_order_relaxed);
  if (!down_.exchange(true)) {
    std::fprintf(stderr, "expert node %s unreachable (%s); retrying after %d ms\n", address_.c_str(),
                 why.ToString().c_str(), retry_after_ms_);
  }
}

void RemoteEndpoint::MarkUp() {
  if (down_.load(std::memory_order_relaxed) && down_.exchange(false)) {
    std::fprintf(stderr, "expert node %s is back\n", address_.c_str());
  }
}

std::unique_ptr<internal::StreamCall> RemoteEndpoint::Acquire(bool* reused) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!idle_.empty()) {
      std::unique_ptr<internal::StreamCall> c = std::move(idle_.back());
      idle_.pop_back();
      *reused = true;
      return c;
    }
  }
  *reused = false;
  return std::make_unique<internal::StreamCall>(stub_->stub.get());
}

void RemoteEndpoint::Release(std::unique_ptr<internal::StreamCall> call) {
  constexpr size_t kMaxIdleStreams = 8;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (idle_.size() < kMaxIdleStreams) {
      idle_.push_back(std::move(call));
      return;
    }
  }
  Discard(std::move(call));
}

absl::Status RemoteEndpoint::Call(const v1::ForwardRequest& request, v1::ForwardResponse* response,
                                  Clock::time_point deadline, bool use_stream) {
  if (!use_stream) {
    grpc::ClientContext ctx;
    ctx.set_deadline(ToSystem(deadline));
    const grpc::Status s = stub_->stub->Forward(&ctx, request, response);
    if (s.ok()) return absl::OkStatus();
    const absl::Status status = FromGrpc(s);
    if (IsNodeVerdict(status.code())) {  // same shape as a stream's per-request error
      response->Clear();
      response->set_request_id(request.request_id());
      response->set_error(EncodeStreamError(status));
      return absl::OkStatus();
    }
    return status;
  }
  while (true) {
    bool reused = false;
    std::unique_ptr<internal::StreamCall> call = Acquire(&reused);
    absl::Status s = call->RoundTrip(request, response, deadline);
    if (s.ok()) {
      Release(std::move(call));
      return s;
    }
    Discard(std::move(call));
    // A pooled stream may have ended while idle (the node restarted): retry
    // once on a fresh stream; a fresh stream's failure is the endpoint's.
    if (!reused || s.code() == absl::StatusCode::kDeadlineExceeded || Clock::now() >= deadline) return s;
  }
}

RemoteGroup::RemoteGroup(std::vector<std::shared_ptr<RemoteEndpoint>> endpoints, int64_t dim,
                         const PlacementOptions& options, bool use_stream)
    : endpoints_(std::move(endpoints)), dim_(dim), options_(options), use_stream_(use_stream) {
  worker_ = std::thread([this] {
    for (;;) {
      std::packaged_task<absl::Status()> task;
      {
        std::unique_lock<std::mutex> lock(queue_mu_);
        queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  });
}

RemoteGroup::~RemoteGroup() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  worker_.join();
}

std::future<absl::Status> RemoteGroup::StartBatch(int layer, std::vector<ExpertCall> calls) {
  std::packaged_task<absl::Status()> task([this, layer, calls = std::move(calls)] { return ForwardBatch(layer, calls); });
  std::future<absl::Status> result = task.get_future();
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_.push_back(std::move(task));
  }
  queue_cv_.notify_one();
  return result;
}

std::string RemoteGroup::Describe() const {
  std::string s;
  for (size_t i = 0; i < endpoints_.size(); ++i) s += StrCat(i ? ", " : "", endpoints_[i]->address());
  return s;
}

namespace {

absl::Status CheckResponse(const v1::ForwardRequest& req, const v1::ForwardResponse& resp, int64_t dim) {
  if (!resp.error().empty()) return DecodeStreamError(resp.error());
  if (resp.request_id() != req.request_id()) {
    return absl::InternalError(StrCat("reply to request ", resp.request_id(), ", expected ", req.request_id()));
  }
  if (resp.experts_size() != req.experts_size()) {
    return absl::InternalError(StrCat("reply has ", resp.experts_size(), " experts, expected ", req.experts_size()));
  }
  for (int i = 0; i < req.experts_size(); ++i) {
    const v1::ExpertRows& a = req.experts(i);
    const v1::ExpertRows& b = resp.experts(i);
    if (b.expert() != a.expert() || b.n_rows() != a.n_rows() || b.rows().size() != a.rows().size()) {
      return absl::InternalError(StrCat("reply entry ", i, " is expert ", b.expert(), " with ", b.n_rows(), " rows in ",
                                        b.rows().size(), " bytes; expected expert ", a.expert(), " with ", a.n_rows(),
                                        " rows in ", a.rows().size(), " bytes (dim ", dim, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RemoteGroup::ForwardBatch(int layer, const std::vector<ExpertCall>& calls) {
  if (calls.empty()) return absl::OkStatus();
  auto request = std::make_unique<v1::ForwardRequest>();  // rows can be large: not on the stack
  request->set_request_id(next_request_id_.fetch_add(1, std::memory_order_relaxed));
  request->set_layer(static_cast<uint32_t>(layer));
  request->set_dim(static_cast<uint32_t>(dim_));
  request->set_dtype(v1::DTYPE_F32);
  uint64_t total = 0;
  for (const ExpertCall& c : calls) {
    if (c.n_rows < 0 || c.n_rows > kMaxRowsPerExpert || (c.n_rows > 0 && (!c.in || !c.out))) {
      return absl::InvalidArgumentError(StrCat("expert ", c.expert, ": ", c.n_rows, " rows (at most ",
                                               kMaxRowsPerExpert, " per remote call)"));
    }
    const uint64_t bytes = static_cast<uint64_t>(c.n_rows) * dim_ * sizeof(float);
    total += bytes;
    if (total > static_cast<uint64_t>(kMaxMessageBytes) - (1u << 20)) {
      return absl::ResourceExhaustedError(StrCat("layer ", layer, ": remote batch of ", total,
                                                 "+ bytes exceeds the message limit of ", kMaxMessageBytes));
    }
    v1::ExpertRows* e = request->add_experts();
    e->set_expert(static_cast<uint32_t>(c.expert));
    e->set_n_rows(static_cast<uint32_t>(c.n_rows));
    std::string* rows = e->mutable_rows();
    rows->resize(bytes);
    if (bytes > 0) std::memcpy(rows->data(), c.in, bytes);
  }

  std::string errors;
  absl::Status verdict;  // a node's answer that it cannot run this request
  for (const std::shared_ptr<RemoteEndpoint>& ep : endpoints_) {
    const Clock::time_point now = Clock::now();
    if (const int64_t ms = ep->DownForMs(now); ms > 0) {
      errors += StrCat(errors.empty() ? "" : "; ", ep->address(), ": down, next try in ", ms, " ms");
      continue;
    }
    v1::ForwardResponse response;
    absl::Status s = ep->Call(*request, &response, now + std::chrono::milliseconds(options_.deadline_ms), use_stream_);
    if (s.ok()) s = CheckResponse(*request, response, dim_);
    if (s.ok()) {
      for (size_t i = 0; i < calls.size(); ++i) {
        const std::string& rows = response.experts(static_cast<int>(i)).rows();
        if (!rows.empty()) std::memcpy(calls[i].out, rows.data(), rows.size());
      }
      ep->MarkUp();
      return absl::OkStatus();
    }
    errors += StrCat(errors.empty() ? "" : "; ", ep->address(), ": ", s.ToString());
    if (IsNodeVerdict(s.code())) {
      if (verdict.ok()) verdict = absl::Status(s.code(), StrCat("expert node ", ep->address(), ": ", s.message()));
      continue;  // the node is up; a replica may hold the expert
    }
    ep->MarkDown(s);
  }
  if (!verdict.ok()) return verdict;
  return absl::UnavailableError(StrCat("no expert node answered (", errors, ")"));
}

absl::Status RemoteExpert::Forward(const float* in, int64_t n_rows, float* out) const {
  return group_->ForwardBatch(layer_, {ExpertCall{expert_, in, n_rows, out}});
}

}  // namespace micromoe::experts
