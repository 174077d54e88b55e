#include "experts/worker_team.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_group.h>

namespace micromoe::experts {
namespace {

// One loop's body: each of its parts counts itself after a little work (so
// that a loop returning before its parts finish is seen) and checks that it
// runs for the loop in progress. Each loop's body lives at its own address,
// so a helper reading an earlier loop's body would be seen too.
struct LoopBody {
  int loop;
  const std::atomic<int>* current_loop;
  std::vector<std::atomic<int>>* runs;
  std::set<std::thread::id>* threads;
  std::mutex* threads_mutex;
  void operator()(int part) const {
    volatile double sink = 0;
    for (int i = 0; i < 200; ++i) sink = sink + i;  // a little work so that helpers get parts
    EXPECT_EQ(current_loop->load(), loop);
    {
      std::lock_guard<std::mutex> lock(*threads_mutex);
      threads->insert(std::this_thread::get_id());
    }
    (*runs)[part].fetch_add(1);
  }
};

// Runs `loops` loops of 1..64 parts on `team`; every part of every loop must
// run exactly once. Returns the threads that ran parts.
std::set<std::thread::id> RunLoops(WorkerTeam& team, int loops) {
  std::set<std::thread::id> threads;
  std::mutex threads_mutex;
  std::atomic<int> current_loop{-1};
  std::vector<std::unique_ptr<LoopBody>> bodies;  // kept, so that every loop's body has its own address
  for (int loop = 0; loop < loops; ++loop) {
    const int n_parts = 1 + loop % 64;
    std::vector<std::atomic<int>> runs(n_parts);
    bodies.push_back(std::make_unique<LoopBody>(LoopBody{loop, &current_loop, &runs, &threads, &threads_mutex}));
    current_loop = loop;
    team.Run(n_parts, *bodies.back());
    for (int part = 0; part < n_parts; ++part) {
      EXPECT_EQ(runs[part].load(), 1) << "loop " << loop << " part " << part;
    }
  }
  return threads;
}

TEST(WorkerTeam, RunsEveryPartOnceOnTheHelpersToo) {
  tbb::global_control two(tbb::global_control::max_allowed_parallelism, 2);
  WorkerTeam team;
  EXPECT_EQ(WorkerTeam::Current(), &team);
  const std::set<std::thread::id> threads = RunLoops(team, 2000);
  if (team.size() > 1 && std::thread::hardware_concurrency() > 1) {
    EXPECT_EQ(threads.size(), 2u) << "the helper never took a part in 2000 loops";
  }
}

TEST(WorkerTeam, OneThreadRunsEverythingOnTheCaller) {
  tbb::global_control one(tbb::global_control::max_allowed_parallelism, 1);
  WorkerTeam team;
  EXPECT_EQ(team.size(), 1);
  const std::set<std::thread::id> threads = RunLoops(team, 100);
  EXPECT_EQ(threads, std::set<std::thread::id>{std::this_thread::get_id()});
}

TEST(WorkerTeam, ScopesNest) {
  WorkerTeam outer;
  {
    WorkerTeam inner;
    EXPECT_EQ(WorkerTeam::Current(), &inner);
    EXPECT_EQ(inner.size(), 1);  // the outer team holds the workers
    RunLoops(inner, 50);
  }
  EXPECT_EQ(WorkerTeam::Current(), &outer);
  RunLoops(outer, 50);
}

TEST(WorkerTeam, NoTeamOutsideAScope) {
  { WorkerTeam team; }
  EXPECT_EQ(WorkerTeam::Current(), nullptr);
}

// A helper is a oneTBB task: a wait of the team's own thread may pick it up,
// and it must not keep that wait from finishing.
TEST(WorkerTeam, OneTbbWaitsInsideTheScopeFinish) {
  WorkerTeam team;
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> sum{0};
    tbb::parallel_for(0, 100, [&](int i) { sum += i; });
    EXPECT_EQ(sum.load(), 4950);
    tbb::task_group tg;
    tg.run([&] { sum += 1; });
    tg.wait();
    EXPECT_EQ(sum.load(), 4951);
    RunLoops(team, 10);
  }
}

// Helpers leave after an idle spell and come back for the next loop.
TEST(WorkerTeam, HelpersComeBackAfterAnIdleSpell) {
  tbb::global_control two(tbb::global_control::max_allowed_parallelism, 2);
  WorkerTeam team;
  std::set<std::thread::id> after_idle;
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past the idle timeout
    const std::set<std::thread::id> threads = RunLoops(team, 200);
    after_idle.insert(threads.begin(), threads.end());
  }
  if (team.size() > 1 && std::thread::hardware_concurrency() > 1) {
    EXPECT_EQ(after_idle.size(), 2u) << "no helper took a part after an idle spell";
  }
}

// A part that throws: the other parts still run, Run() rethrows, and the
// team runs the next loops as before.
TEST(WorkerTeam, AnExceptionInAPartReachesTheCaller) {
  WorkerTeam team;
  for (int thrower : {0, 5, 15}) {
    std::vector<std::atomic<int>> runs(16);
    EXPECT_THROW(team.Run(16,
                          [&](int part) {
                            runs[part].fetch_add(1);
                            if (part == thrower) throw std::runtime_error("part failed");
                          }),
                 std::runtime_error);
    for (int part = 0; part < 16; ++part) EXPECT_EQ(runs[part].load(), 1) << "part " << part;
    RunLoops(team, 50);
  }
}

// A part that runs a loop of its own (on the team's thread, Current() is
// still the team): the inner loop runs there, whole.
TEST(WorkerTeam, ALoopInsideAPartRunsWhole) {
  WorkerTeam team;
  for (int round = 0; round < 50; ++round) {
    std::vector<std::atomic<int>> inner(8 * 5);
    team.Run(8, [&](int part) {
      if (WorkerTeam* t = WorkerTeam::Current()) {
        t->Run(5, [&](int i) { inner[part * 5 + i].fetch_add(1); });
      } else {
        for (int i = 0; i < 5; ++i) inner[part * 5 + i].fetch_add(1);
      }
    });
    for (int i = 0; i < 8 * 5; ++i) EXPECT_EQ(inner[i].load(), 1) << "round " << round << " item " << i;
  }
}

// Two forward steps at once (a server's requests): each thread's team, with
// one-TBB loops between, finishes.
TEST(WorkerTeam, TeamsOnSeveralThreadsAtOnceFinish) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([] {
      for (int step = 0; step < 20; ++step) {
        WorkerTeam team;
        RunLoops(team, 20);
        std::atomic<int> sum{0};
        tbb::parallel_for(0, 64, [&](int i) { sum += i; });
        EXPECT_EQ(sum.load(), 2016);
        RunLoops(team, 20);
      }
    });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace
}  // namespace micromoe::experts
