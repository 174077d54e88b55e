#include "experts/worker_team.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>

#include <tbb/global_control.h>
#include <tbb/task_arena.h>

namespace micromoe::experts {
namespace {

thread_local WorkerTeam* current_team = nullptr;

constexpr uint64_t kPartBits = 16;
constexpr uint64_t kPartMask = (uint64_t{1} << kPartBits) - 1;

uint64_t Ticket(uint64_t gen, uint64_t n_parts, uint64_t next) {
  return gen << 32 | n_parts << kPartBits | next;
}
uint64_t GenOf(uint64_t t) { return t >> 32; }
uint64_t PartsOf(uint64_t t) { return (t >> kPartBits) & kPartMask; }
uint64_t NextOf(uint64_t t) { return t & kPartMask; }

void Pause() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

}  // namespace

int AllowedThreads() {
  return std::min<int>(tbb::this_task_arena::max_concurrency(),
                       static_cast<int>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism)));
}

WorkerTeam::WorkerTeam() : outer_(current_team), owner_(std::this_thread::get_id()) {
  // A team inside a team's part would wait on workers the outer one holds.
  n_helpers_ = outer_ ? 0 : std::max(0, AllowedThreads() - 1);
  for (int i = 0; i < n_helpers_; ++i) StartHelper();
  current_team = this;
}

WorkerTeam::~WorkerTeam() {
  current_team = outer_;
  stop_.store(true, std::memory_order_release);
  helpers_.wait();  // helpers that never started run here and return at once (owner check)
}

WorkerTeam* WorkerTeam::Current() { return current_team; }

int WorkerTeam::Claim(uint64_t gen) {
  uint64_t t = ticket_.load(std::memory_order_acquire);
  while (GenOf(t) == gen && NextOf(t) < PartsOf(t)) {
    if (ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) return static_cast<int>(NextOf(t));
  }
  return -1;
}

void WorkerTeam::RunPart(int p) {
  try {
    call_(fn_, p);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void WorkerTeam::RunParts(int n_parts, PartFn call, const void* fn) {
  if (n_parts <= 0) return;
  if (n_helpers_ == 0 || n_parts == 1 || in_run_ || static_cast<uint64_t>(n_parts) > kPartMask) {
    for (int p = 0; p < n_parts; ++p) call(fn, p);
    return;
  }
  for (int i = running_helpers_.load(std::memory_order_relaxed); i < n_helpers_; ++i) StartHelper();
  // The previous loop is finished (done_ reached its parts), so no helper
  // reads call_ / fn_ while they change: a helper reads them only after
  // claiming a part, which the new ticket below makes possible.
  call_ = call;
  fn_ = fn;
  done_.store(0, std::memory_order_relaxed);
  uint64_t gen = (GenOf(ticket_.load(std::memory_order_relaxed)) + 1) & 0xFFFFFFFFu;
  if (gen == 0) gen = 1;  // a helper that starts has seen generation 0
  in_run_ = true;
  ticket_.store(Ticket(gen, n_parts, 0), std::memory_order_release);
  int finished = 0;
  for (int p; (p = Claim(gen)) >= 0;) {
    RunPart(p);
    ++finished;
  }
  done_.fetch_add(finished, std::memory_order_acq_rel);
  while (done_.load(std::memory_order_acquire) < n_parts) Pause();
  in_run_ = false;
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(error_mutex_);
    error.swap(error_);
  }
  if (error) std::rethrow_exception(error);
}

void WorkerTeam::StartHelper() {
  running_helpers_.fetch_add(1, std::memory_order_relaxed);
  helpers_.run([this] {
    Help();
    running_helpers_.fetch_sub(1, std::memory_order_relaxed);
  });
}

void WorkerTeam::Help() {
  if (std::this_thread::get_id() == owner_) return;  // picked up by a wait of the team's own thread
  using Clock = std::chrono::steady_clock;
  uint64_t seen = 0;  // the last generation looked at; loops never have generation 0
  auto idle_since = Clock::now();
  for (int spins = 0; !stop_.load(std::memory_order_acquire);) {
    const uint64_t gen = GenOf(ticket_.load(std::memory_order_acquire));
    if (gen == seen) {
      Pause();
      if (++spins % 256 == 0 && Clock::now() - idle_since > kIdleTimeout) return;
      continue;
    }
    seen = gen;
    int finished = 0;
    for (int p; (p = Claim(gen)) >= 0;) {
      RunPart(p);
      ++finished;
    }
    if (finished) done_.fetch_add(finished, std::memory_order_acq_rel);
    idle_since = Clock::now();
  }
}

}  // namespace micromoe::experts
