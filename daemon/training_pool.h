#pragma once

// Background workers for work that must never run on the event loop (the transformer's
// training, DESIGN.md section 3). Tasks wait in one bounded queue; a task runs on a worker and
// is then handed back to the loop through asio::post, where it applies its result: the loop
// keeps owning all state, a worker only sees what its task carries.
//
// Rules (daemon/README.md): at most one queued task per key (a task submitted under a key that
// is still queued replaces it in place: coalescing); when the queue is full the oldest queued
// task is dropped and told so on the loop; Stop() cancels the running tasks (they see the flag
// between two steps), drops the queued ones and joins the workers.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>  // before Asio: Boost 1.74 misses it under C++20
#include <vector>

#include <boost/asio/io_context.hpp>

namespace dinamo::daemon {

class TrainingTask {
 public:
  enum class Outcome {
    kCompleted,  // Run() returned without being cancelled
    kDropped,    // the queue was full and this was its oldest task
    kCancelled,  // the pool stopped before or while it ran
  };

  virtual ~TrainingTask() = default;
  // On a worker. Long work checks `cancelled` between its steps and returns soon once it is set.
  virtual void Run(const std::atomic<bool>& cancelled) = 0;
  // On the loop, exactly once per task that was not replaced: after Run (kCompleted), or when
  // it was dropped. Cancelled tasks are not finished: the loop has stopped by then.
  virtual void Finish(Outcome outcome) = 0;
};

struct TrainingPoolOptions {
  int workers = 1;
  std::size_t queue_size = 64;
  // Added to the workers' nice value (per thread), so that on a busy machine the event loop
  // gets the CPU before a training does.
  int nice = 10;
  // The time slice the workers ask the kernel for (Linux 6.12 and later: sched_attr's
  // sched_runtime; older kernels ignore it; 0 keeps the default). Under EEVDF a running thread
  // is shielded from wakeup preemption for up to its slice (1.4 ms here) whatever its nice, so
  // a waking loop would wait for a training's slice to end; a waking thread with a shorter
  // slice than the running one overrides the shield. A long slice for the workers therefore
  // lets the loop, ZeroMQ's I/O thread and every other thread on their default slice take the
  // CPU from a training at once. Not SCHED_IDLE: a worker preempted while it holds a lock the
  // loop then needs (malloc's arena, this pool's queue) runs again only on an idle CPU, and the
  // loop waits with it (stalls of 0.4 to 2.4 s measured on this busy 2-core machine).
  std::chrono::nanoseconds slice = std::chrono::milliseconds(20);
};

class TrainingPool {
 public:
  TrainingPool(boost::asio::io_context& loop, const TrainingPoolOptions& options);
  ~TrainingPool();
  TrainingPool(const TrainingPool&) = delete;
  TrainingPool& operator=(const TrainingPool&) = delete;

  enum class Submitted { kQueued, kReplaced, kStopped };

  // Queues `task` under `key`, or replaces the task still queued under that key (it keeps its
  // place; the replaced task is destroyed without Finish). A full queue drops its oldest task.
  Submitted Submit(std::uint64_t key, std::unique_ptr<TrainingTask> task);

  // Replaces the task queued under `key` and returns true; false (and `task` untouched) when
  // no task is queued under it (none, or it is running already).
  bool Replace(std::uint64_t key, std::unique_ptr<TrainingTask>& task);

  // Cancels and joins; idempotent. Nothing is posted to the loop afterwards.
  void Stop();

  std::size_t queue_depth() const;
  std::size_t running() const;
  int workers() const { return static_cast<int>(threads_.size()); }

 private:
  struct Queued {
    std::uint64_t key;
    std::unique_ptr<TrainingTask> task;
  };

  void Work();
  void PostFinish(std::unique_ptr<TrainingTask> task, TrainingTask::Outcome outcome);

  boost::asio::io_context& loop_;
  std::size_t queue_size_;
  int nice_;
  std::chrono::nanoseconds slice_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Queued> queue_;
  std::size_t running_ = 0;
  bool stopping_ = false;
  std::atomic<bool> cancelled_{false};
  std::vector<std::thread> threads_;
};

}  // namespace dinamo::daemon
