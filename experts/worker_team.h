// Parallel loops for a decode step without oneTBB's wake-up cost.
//
// A batch-1 decode step runs about five short parallel loops per layer (Q/K/V,
// output projection, gate/up, down, and the output head once). With oneTBB
// each loop's second task started 1.5-2.5 us after the first (the worker is
// woken from sleep; measured on the 2-core VM with 20 us loops), and a
// 1.6 MB Q4_0 product streamed at 36-49 GB/s against 42-53 GB/s with a
// spinning helper (2 threads, medians of 10, alternated processes).
//
// A WorkerTeam holds the other oneTBB workers for one scope (a forward step):
// each runs a helper task that spins waiting for loops, and Run() hands a
// loop's parts to whoever is there. Parts are claimed one at a time from a
// counter, so a helper that has not started (no free worker, one thread
// allowed, a nested call) costs nothing but its share: the calling thread
// takes every part left. The destructor stops the helpers and waits for them.
//
// A helper is a task, so a thread waiting in oneTBB (a task_group's wait, a
// parallel_for) may pick it up. So that such a wait ends, a helper returns at
// once on the team's own thread and after kIdleTimeout without a loop; Run()
// starts new helpers for the ones that left. A wait on another thread that
// picked one up lasts until that team's step ends or goes idle. While a team
// exists it holds the workers: other oneTBB work of the process (a task_group
// in the same step, another thread's loops) runs on its own callers' threads.
//
// An exception thrown by a part is rethrown by Run() once every part has run.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>

#include <tbb/task_group.h>

namespace micromoe::experts {

// Threads this thread's parallel work may use: the arena's concurrency,
// capped by tbb::global_control's max_allowed_parallelism.
int AllowedThreads();

class WorkerTeam {
 public:
  // Starts a helper on every oneTBB worker this thread may use besides itself.
  WorkerTeam();
  ~WorkerTeam();
  WorkerTeam(const WorkerTeam&) = delete;
  WorkerTeam& operator=(const WorkerTeam&) = delete;

  // Threads that may take parts: this one and the helpers asked for.
  int size() const { return 1 + n_helpers_; }

  // Runs fn(part) for every part in [0, n_parts), on this thread and the
  // helpers; returns when all are done. Only the thread that made the team
  // may call it; a call from inside one of its parts runs its parts there.
  template <class Fn>
  void Run(int n_parts, const Fn& fn) {
    RunParts(n_parts, [](const void* f, int part) { (*static_cast<const Fn*>(f))(part); }, &fn);
  }

  // The team of this thread's current scope, or nullptr.
  static WorkerTeam* Current();

 private:
  using PartFn = void (*)(const void* fn, int part);
  static constexpr std::chrono::microseconds kIdleTimeout{200};
  void RunParts(int n_parts, PartFn call, const void* fn);
  void StartHelper();
  void Help();
  // Claims a part of the loop of generation `gen` from `ticket`; -1 when none is left.
  int Claim(uint64_t gen);
  // Runs part p of the current loop; an exception is kept for Run() to rethrow.
  void RunPart(int p);

  // Generation (high 32 bits, never 0), number of parts (next 16) and next
  // unclaimed part (low 16) of the current loop: a claim is one CAS. A loop
  // ends when done_ counts all of its parts, so call_ and fn_, read after a
  // claim, never change under a helper.
  alignas(64) std::atomic<uint64_t> ticket_{0};
  alignas(64) std::atomic<int> done_{0};
  std::atomic<bool> stop_{false};
  PartFn call_ = nullptr;
  const void* fn_ = nullptr;
  bool in_run_ = false;  // the owner is inside RunParts
  std::mutex error_mutex_;
  std::exception_ptr error_;  // the first exception of the current loop
  int n_helpers_ = 0;
  std::atomic<int> running_helpers_{0};  // started and not yet returned
  WorkerTeam* outer_ = nullptr;
  std::thread::id owner_;
  tbb::task_group helpers_;
};

}  // namespace micromoe::experts
