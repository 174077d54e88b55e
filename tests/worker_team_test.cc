#include "experts/worker_team.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_group.h>

namespace micromoe::experts {
namespace {

// Runs `loops` loops of 1..64 parts on `team`; every part of every loop must
// run exactly once. Returns the threads that ran parts.
std::set<std::thread::id> RunLoops(WorkerTeam& team, int loops) {
  std::set<std::thread::id> threads;
  std::mutex threads_mutex;
  for (int loop = 0; loop < loops; ++loop) {
    const int n_parts = 1 + loop % 64;
    std::vector<std::atomic<int>> runs(n_parts);
    team.Run(n_parts, [&](int part) {
      runs[part].fetch_add(1);
      volatile double sink = 0;
      for (int i = 0; i < 200; ++i) sink = sink + i;  // a little work so that helpers get parts
      std::lock_guard<std::mutex> lock(threads_mutex);
      threads.insert(std::this_thread::get_id());
    });
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
TEST(WorkerTeam, LoopsAfterAnIdleSpellStillRunEveryPart) {
  WorkerTeam team;
  for (int round = 0; round < 5; ++round) {
    RunLoops(team, 20);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
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
