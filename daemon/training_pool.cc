#include "training_pool.h"

#include <algorithm>
#include <cstdint>

#include <boost/asio/post.hpp>

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace dinamo::daemon {
namespace {

// struct sched_attr as the kernel reads it (SCHED_ATTR_SIZE_VER0): glibc 2.36 declares neither
// the struct nor sched_setattr.
struct SchedAttr {
  std::uint32_t size;
  std::uint32_t sched_policy;
  std::uint64_t sched_flags;
  std::int32_t sched_nice;
  std::uint32_t sched_priority;
  std::uint64_t sched_runtime;
  std::uint64_t sched_deadline;
  std::uint64_t sched_period;
};

// Puts the calling worker thread below the loop (TrainingPoolOptions: nice and slice).
void LowerPriority(int nice, std::chrono::nanoseconds slice) {
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  const int niced = std::clamp(::getpriority(PRIO_PROCESS, tid) + nice, -20, 19);
  SchedAttr attr{};
  attr.size = sizeof(attr);
  attr.sched_policy = SCHED_OTHER;
  attr.sched_nice = niced;
  attr.sched_runtime = static_cast<std::uint64_t>(std::max<std::int64_t>(0, slice.count()));
  if (::syscall(SYS_sched_setattr, 0, &attr, 0) != 0) {
    ::setpriority(PRIO_PROCESS, tid, niced);  // a kernel without sched_setattr: nice alone
  }
}

}  // namespace

TrainingPool::TrainingPool(boost::asio::io_context& loop, const TrainingPoolOptions& options)
    : loop_(loop),
      queue_size_(std::max<std::size_t>(1, options.queue_size)),
      nice_(options.nice),
      slice_(options.slice) {
  const int n = std::max(1, options.workers);
  threads_.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads_.emplace_back([this] { Work(); });
  }
}

TrainingPool::~TrainingPool() { Stop(); }

TrainingPool::Submitted TrainingPool::Submit(std::uint64_t key,
                                             std::unique_ptr<TrainingTask> task) {
  std::unique_ptr<TrainingTask> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      return Submitted::kStopped;
    }
    for (Queued& q : queue_) {
      if (q.key == key) {
        q.task = std::move(task);
        return Submitted::kReplaced;
      }
    }
    if (queue_.size() >= queue_size_) {
      dropped = std::move(queue_.front().task);
      queue_.pop_front();
    }
    queue_.push_back({key, std::move(task)});
  }
  wake_.notify_one();
  if (dropped) {
    PostFinish(std::move(dropped), TrainingTask::Outcome::kDropped);
  }
  return Submitted::kQueued;
}

bool TrainingPool::Replace(std::uint64_t key, std::unique_ptr<TrainingTask>& task) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Queued& q : queue_) {
    if (q.key == key) {
      q.task = std::move(task);
      return true;
    }
  }
  return false;
}

void TrainingPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && threads_.empty()) {
      return;
    }
    stopping_ = true;
    cancelled_ = true;
    queue_.clear();  // never run, never finished: the loop is stopping
  }
  wake_.notify_all();
  for (std::thread& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
  threads_.clear();
}

std::size_t TrainingPool::queue_depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

std::size_t TrainingPool::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

void TrainingPool::Work() {
  LowerPriority(nice_, slice_);
  for (;;) {
    std::unique_ptr<TrainingTask> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) {
        return;
      }
      task = std::move(queue_.front().task);
      queue_.pop_front();
      ++running_;
    }
    task->Run(cancelled_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --running_;
      if (stopping_) {
        return;  // cancelled: the loop no longer runs handlers
      }
    }
    PostFinish(std::move(task), TrainingTask::Outcome::kCompleted);
  }
}

void TrainingPool::PostFinish(std::unique_ptr<TrainingTask> task, TrainingTask::Outcome outcome) {
  // asio handlers must be copyable in Boost 1.74's post: share the task.
  std::shared_ptr<TrainingTask> shared(std::move(task));
  boost::asio::post(loop_, [shared, outcome] { shared->Finish(outcome); });
}

}  // namespace dinamo::daemon
