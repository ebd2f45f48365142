#include "training_pool.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace dinamo::daemon {
namespace {

// Opened once; whoever waits on it before then blocks (no timing: tests wait for events).
class Gate {
 public:
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return open_; });
  }
  // Waits until open or `cancelled`, polling the flag (a cancelled task must not block).
  void WaitOr(const std::atomic<bool>& cancelled) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!open_ && !cancelled) {
      cv_.wait_for(lock, std::chrono::milliseconds(5));
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

// What the tasks did, as the loop saw it.
struct Log {
  std::vector<std::string> finished;  // "name:outcome", in the loop's order
};

const char* Name(TrainingTask::Outcome o) {
  switch (o) {
    case TrainingTask::Outcome::kCompleted:
      return "completed";
    case TrainingTask::Outcome::kDropped:
      return "dropped";
    case TrainingTask::Outcome::kCancelled:
      return "cancelled";
  }
  return "?";
}

class FakeTask final : public TrainingTask {
 public:
  FakeTask(std::string name, Log& log, Gate* gate = nullptr, Gate* started = nullptr)
      : name_(std::move(name)), log_(log), gate_(gate), started_(started) {}

  void Run(const std::atomic<bool>& cancelled) override {
    if (started_ != nullptr) {
      started_->Open();
    }
    if (gate_ != nullptr) {
      gate_->WaitOr(cancelled);  // a deliberately slow training
    }
    saw_cancel_ = cancelled;
  }
  void Finish(Outcome outcome) override { log_.finished.push_back(name_ + ":" + Name(outcome)); }

  bool saw_cancel_ = false;

 private:
  std::string name_;
  Log& log_;
  Gate* gate_;
  Gate* started_;
};

// Runs the loop until `n` tasks have finished (gives up after a minute: the test then fails).
void RunUntil(boost::asio::io_context& io, const Log& log, std::size_t n) {
  for (int i = 0; i < 60000 && log.finished.size() < n; ++i) {
    io.restart();
    if (io.poll() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

TEST(TrainingPool, FinishesACompletedTaskOnTheLoop) {
  boost::asio::io_context io;
  Log log;
  TrainingPool pool(io, {1, 4});
  pool.Submit(1, std::make_unique<FakeTask>("a", log));
  RunUntil(io, log, 1);
  EXPECT_EQ(log.finished, std::vector<std::string>{"a:completed"});
}

// The kernel's time slice of the calling thread in ns (/proc: "se.slice"), 0 when not shown.
std::uint64_t OwnSlice() {
  std::ifstream sched("/proc/thread-self/sched");
  std::string line;
  while (std::getline(sched, line)) {
    if (line.rfind("se.slice", 0) == 0) {
      return std::stoull(line.substr(line.find(':') + 1));
    }
  }
  return 0;
}

// Custom slices for SCHED_OTHER came with Linux 6.12.
bool KernelHasCustomSlices() {
  utsname u{};
  int major = 0;
  int minor = 0;
  return ::uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
         (major > 6 || (major == 6 && minor >= 12));
}

// Runs nothing; notes how the worker it runs on is scheduled.
class PriorityTask final : public TrainingTask {
 public:
  struct Seen {
    int policy = -1;
    int nice = 0;
    std::uint64_t slice = 0;
  };
  PriorityTask(Log& log, Seen& seen) : log_(log), seen_(seen) {}
  void Run(const std::atomic<bool>&) override {
    seen_.policy = ::sched_getscheduler(0);
    seen_.nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)));
    seen_.slice = OwnSlice();
  }
  void Finish(Outcome) override { log_.finished.push_back("priority"); }

 private:
  Log& log_;
  Seen& seen_;
};

TEST(TrainingPool, WorkersAreNicedWithALongSliceAndTheLoopIsLeftAlone) {
  boost::asio::io_context io;
  Log log;
  PriorityTask::Seen seen;
  TrainingPoolOptions options;
  options.nice = 3;
  options.slice = std::chrono::milliseconds(20);
  TrainingPool pool(io, options);
  pool.Submit(1, std::make_unique<PriorityTask>(log, seen));
  RunUntil(io, log, 1);

  EXPECT_EQ(seen.policy, SCHED_OTHER);  // not SCHED_IDLE: see TrainingPoolOptions::slice
  EXPECT_EQ(seen.nice, std::min(19, ::getpriority(PRIO_PROCESS, 0) + 3));
  if (KernelHasCustomSlices()) {
    EXPECT_EQ(seen.slice, 20'000'000u);
    EXPECT_NE(OwnSlice(), 20'000'000u);
  }
}

TEST(TrainingPool, FullQueueDropsTheOldestQueuedTask) {
  boost::asio::io_context io;
  Log log;
  Gate gate, started;
  TrainingPool pool(io, {1, 2});
  pool.Submit(1, std::make_unique<FakeTask>("running", log, &gate, &started));
  started.Wait();  // the only worker is busy from here on
  pool.Submit(2, std::make_unique<FakeTask>("oldest", log));
  pool.Submit(3, std::make_unique<FakeTask>("second", log));
  EXPECT_EQ(pool.queue_depth(), 2u);
  pool.Submit(4, std::make_unique<FakeTask>("newest", log));
  EXPECT_EQ(pool.queue_depth(), 2u);

  RunUntil(io, log, 1);
  EXPECT_EQ(log.finished, std::vector<std::string>{"oldest:dropped"});
  gate.Open();
  RunUntil(io, log, 4);
  EXPECT_EQ(log.finished, (std::vector<std::string>{"oldest:dropped", "running:completed",
                                                    "second:completed", "newest:completed"}));
}

TEST(TrainingPool, SubmitUnderAQueuedKeyReplacesItInPlace) {
  boost::asio::io_context io;
  Log log;
  Gate gate, started;
  TrainingPool pool(io, {1, 8});
  pool.Submit(1, std::make_unique<FakeTask>("running", log, &gate, &started));
  started.Wait();
  EXPECT_EQ(pool.Submit(2, std::make_unique<FakeTask>("first", log)),
            TrainingPool::Submitted::kQueued);
  pool.Submit(3, std::make_unique<FakeTask>("other", log));
  EXPECT_EQ(pool.Submit(2, std::make_unique<FakeTask>("coalesced", log)),
            TrainingPool::Submitted::kReplaced);
  std::unique_ptr<TrainingTask> replacement = std::make_unique<FakeTask>("replaced", log);
  EXPECT_TRUE(pool.Replace(2, replacement));
  EXPECT_EQ(replacement, nullptr);
  std::unique_ptr<TrainingTask> nobody = std::make_unique<FakeTask>("nobody", log);
  EXPECT_FALSE(pool.Replace(1, nobody));  // running, not queued
  EXPECT_NE(nobody, nullptr);
  EXPECT_EQ(pool.queue_depth(), 2u);

  gate.Open();
  RunUntil(io, log, 3);
  EXPECT_EQ(log.finished, (std::vector<std::string>{"running:completed", "replaced:completed",
                                                    "other:completed"}));
}

TEST(TrainingPool, LoopKeepsRunningWhileATaskIsSlow) {
  boost::asio::io_context io;
  Log log;
  Gate gate, started;
  TrainingPool pool(io, {1, 4});
  pool.Submit(1, std::make_unique<FakeTask>("slow", log, &gate, &started));
  started.Wait();
  // The loop handles other work while the training runs: 100 handlers, all done, none waits.
  int handled = 0;
  for (int i = 0; i < 100; ++i) {
    boost::asio::post(io, [&handled] { ++handled; });
  }
  io.restart();
  io.poll();
  EXPECT_EQ(handled, 100);
  EXPECT_EQ(pool.running(), 1u);
  EXPECT_TRUE(log.finished.empty());
  gate.Open();
  RunUntil(io, log, 1);
  EXPECT_EQ(log.finished, std::vector<std::string>{"slow:completed"});
}

TEST(TrainingPool, StopCancelsTheRunningTaskAndDropsTheQueue) {
  boost::asio::io_context io;
  Log log;
  Gate never, started;
  auto pool = std::make_unique<TrainingPool>(io, TrainingPoolOptions{1, 4});
  auto task = std::make_unique<FakeTask>("endless", log, &never, &started);
  pool->Submit(1, std::move(task));
  started.Wait();
  pool->Submit(2, std::make_unique<FakeTask>("queued", log));
  pool->Stop();  // returns: the running task saw the flag
  EXPECT_EQ(pool->queue_depth(), 0u);
  EXPECT_EQ(pool->Submit(3, std::make_unique<FakeTask>("late", log)),
            TrainingPool::Submitted::kStopped);
  io.restart();
  io.poll();
  EXPECT_TRUE(log.finished.empty());  // nothing is finished on a loop that is stopping
}

}  // namespace
}  // namespace dinamo::daemon
