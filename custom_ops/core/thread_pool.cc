// thread_pool.cc: ThreadPool. A job lives on the caller's stack: workers join it under the
// mutex while it is published, take indices from its atomic counter, and leave; Run returns
// only after it has withdrawn the job and every worker that joined has left.
#include "thread_pool.h"

#include <algorithm>
#include <atomic>

namespace kldiv {

struct ThreadPool::Job {
  std::size_t n;
  void (*fn)(void*, std::size_t);
  void* data;
  int seats;       // workers that may still join, under mutex_
  int inside = 0;  // workers that joined and have not left, under mutex_
  std::atomic<std::size_t> next{0};

  void Take() {
    for (std::size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(data, i);
  }
};

ThreadPool::ThreadPool(int workers) {
  for (int k = 0; k < workers; ++k) workers_.emplace_back([this] { Work(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Run(std::size_t n, void (*fn)(void*, std::size_t), void* data, int threads) {
  const int seats = std::min(threads - 1, workers());
  if (n <= 1 || seats <= 0) {
    for (std::size_t i = 0; i < n; ++i) fn(data, i);
    return;
  }
  std::lock_guard<std::mutex> turn(run_);
  const int helpers = static_cast<int>(std::min<std::size_t>(seats, n - 1));
  Job job{n, fn, data, helpers};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &job;
    ++generation_;
  }
  for (int k = 0; k < helpers; ++k) wake_.notify_one();
  job.Take();
  std::unique_lock<std::mutex> lock(mutex_);
  job_ = nullptr;  // no one joins now
  left_.wait(lock, [&] { return job.inside == 0; });
}

void ThreadPool::Work() {
  std::uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    Job* job = job_;
    if (job == nullptr || job->seats == 0) continue;
    --job->seats;
    ++job->inside;
    lock.unlock();
    job->Take();
    lock.lock();
    if (--job->inside == 0) left_.notify_all();
  }
}

}  // namespace kldiv
