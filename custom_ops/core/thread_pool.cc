// thread_pool.cc: ThreadPool. A job lives on the caller's stack: workers join it under the
// mutex while it is published, take indices from its atomic counter, and leave; Run returns
// only after it has withdrawn the job and every worker that joined has left.
//
// Fork: every live pool is listed (under a mutex that pthread_atfork's prepare handler takes,
// so the list is whole in the child); the child handler gives each listed pool a fresh State
// without workers and keeps the old one reachable but never destroyed.
#include "thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace kldiv {

struct ThreadPool::Job {
  std::size_t n;
  void (*fn)(void*, std::size_t);
  void* data;
  int seats;       // workers that may still join, under mutex
  int inside = 0;  // workers that joined and have not left, under mutex
  std::atomic<std::size_t> next{0};

  void Take() {
    for (std::size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(data, i);
  }
};

// What the caller and the workers share. Replaced in a forked child, never freed there.
struct ThreadPool::State {
  std::mutex run;  // one Run at a time
  std::mutex mutex;
  std::condition_variable wake, left;
  Job* job = nullptr;  // the running job, under mutex
  std::uint64_t generation = 0;
  bool stop = false;
  std::vector<std::thread> workers;
  State* before_fork = nullptr;  // the parent's state, in a forked child (kept reachable)
};

namespace {

// The live pools and the lock that guards the list; never destroyed (a child forked during
// static destruction still finds them).
std::mutex& PoolsMutex() {
  static std::mutex* mutex = new std::mutex;
  return *mutex;
}

std::vector<ThreadPool*>& Pools() {
  static std::vector<ThreadPool*>* pools = new std::vector<ThreadPool*>;
  return *pools;
}

void LockPools() { PoolsMutex().lock(); }
void UnlockPools() { PoolsMutex().unlock(); }

}  // namespace

void ThreadPool::AfterForkInChild() {
  // Only this thread exists now. Each pool's old state may hold locks of vanished threads and
  // condition variables they wait on: keep it (reachable, undestroyed), start a fresh one.
  for (ThreadPool* pool : Pools()) {
    State* old = pool->state_.release();
    pool->state_ = std::make_unique<State>();
    pool->state_->before_fork = old;
  }
  UnlockPools();
}

ThreadPool::ThreadPool(int workers) : state_(std::make_unique<State>()) {
  static const int registered = pthread_atfork(LockPools, UnlockPools, AfterForkInChild);
  (void)registered;
  // Listed before the workers start, so that no fork sees the workers of an unlisted pool.
  std::lock_guard<std::mutex> list(PoolsMutex());
  Pools().push_back(this);
  State* state = state_.get();
  for (int k = 0; k < workers; ++k) state->workers.emplace_back([state] { Work(state); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> list(PoolsMutex());
    Pools().erase(std::find(Pools().begin(), Pools().end(), this));
  }
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.stop = true;
  }
  s.wake.notify_all();
  for (std::thread& t : s.workers) t.join();
  // A forked child's before_fork chain is left as it is (see State).
}

int ThreadPool::workers() const { return static_cast<int>(state_->workers.size()); }

void ThreadPool::Run(std::size_t n, void (*fn)(void*, std::size_t), void* data, int threads) {
  State& s = *state_;
  const int seats = std::min(threads - 1, workers());
  if (n <= 1 || seats <= 0) {
    for (std::size_t i = 0; i < n; ++i) fn(data, i);
    return;
  }
  std::lock_guard<std::mutex> turn(s.run);
  const int helpers = static_cast<int>(std::min<std::size_t>(seats, n - 1));
  Job job{n, fn, data, helpers};
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.job = &job;
    ++s.generation;
  }
  for (int k = 0; k < helpers; ++k) s.wake.notify_one();
  job.Take();
  std::unique_lock<std::mutex> lock(s.mutex);
  s.job = nullptr;  // no one joins now
  s.left.wait(lock, [&] { return job.inside == 0; });
}

void ThreadPool::Work(State* state) {
  State& s = *state;
  std::uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(s.mutex);
  for (;;) {
    s.wake.wait(lock, [&] { return s.stop || s.generation != seen; });
    if (s.stop) return;
    seen = s.generation;
    Job* job = s.job;
    if (job == nullptr || job->seats == 0) continue;
    --job->seats;
    ++job->inside;
    lock.unlock();
    job->Take();
    lock.lock();
    if (--job->inside == 0) s.left.notify_all();
  }
}

int CoreCount() {
  static const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return cores;
}

ThreadPool& ProcessPool() {
  static ThreadPool* pool = new ThreadPool(CoreCount() - 1);
  return *pool;
}

}  // namespace kldiv
