// thread_pool.h: a ParallelFor (kldiv_core.h) on a fixed set of worker threads, for callers that
// have no onnxruntime thread pool (the kldiv_onnx._core Python module). The caller works too;
// the workers sleep between calls (a condition variable) rather than spin, so that they leave
// the cores to whatever runs between two calls (compare's model sessions, whose onnxruntime
// pools spin). Not OpenMP for that reason: its workers spin after each parallel region unless
// the whole process sets OMP_WAIT_POLICY. Plain C++17 and POSIX (pthread_atfork).
//
// Fork-safe: a process forked while other threads use a pool (a Python program calling
// os.fork or multiprocessing's fork start method while a thread computes) inherits none of the
// workers and possibly locks that vanished threads held. In the child every pool is given fresh
// locks and no workers, so its jobs run on the calling thread; the parent's state is left, never
// destroyed (its condition variables may count waiters that no longer exist).
#ifndef KLDIV_CORE_THREAD_POOL_H_
#define KLDIV_CORE_THREAD_POOL_H_

#include <cstddef>
#include <memory>

namespace kldiv {

class ThreadPool {
 public:
  // `workers` threads besides the caller (0: every call runs inline).
  explicit ThreadPool(int workers);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // fn(data, i) for every i in [0, n) on the caller and at most `threads` - 1 workers; returns
  // when every call has returned. Calls from several threads at once take turns. Must not be
  // called from fn, nor make or destroy a ThreadPool there.
  void Run(std::size_t n, void (*fn)(void*, std::size_t), void* data, int threads);

  // The worker threads: 0 in a process forked from the one that made the pool.
  int workers() const;

 private:
  struct Job;
  struct State;
  static void Work(State* state);
  static void AfterForkInChild();

  std::unique_ptr<State> state_;
};

// The cores of this machine, read once (std::thread::hardware_concurrency reads /sys on every
// call, about 5 us).
int CoreCount();

// The process's shared pool for callers without onnxruntime (the Python module, MindSpore's
// custom op): a worker per core besides the caller, made on first use and never destroyed (its
// workers end with the process; joining them from a static destructor could hang a forked
// child, which has none of them and runs every task on the caller).
ThreadPool& ProcessPool();

}  // namespace kldiv

#endif  // KLDIV_CORE_THREAD_POOL_H_
