// thread_pool.h: a ParallelFor (kldiv_core.h) on a fixed set of worker threads, for callers that
// have no onnxruntime thread pool (the kldiv_onnx._core Python module). The caller works too;
// the workers sleep between calls (a condition variable) rather than spin, so that they leave
// the cores to whatever runs between two calls (compare's model sessions, whose onnxruntime
// pools spin). Not OpenMP for that reason: its workers spin after each parallel region unless
// the whole process sets OMP_WAIT_POLICY. Plain C++17.
#ifndef KLDIV_CORE_THREAD_POOL_H_
#define KLDIV_CORE_THREAD_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace kldiv {

class ThreadPool {
 public:
  // `workers` threads besides the caller (0: every call runs inline).
  explicit ThreadPool(int workers);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // fn(data, i) for every i in [0, n) on the caller and at most `threads` - 1 workers; returns
  // when every call has returned. Calls from several threads at once take turns.
  void Run(std::size_t n, void (*fn)(void*, std::size_t), void* data, int threads);

  int workers() const { return static_cast<int>(workers_.size()); }

 private:
  struct Job;
  void Work();

  std::mutex run_;  // one Run at a time
  std::mutex mutex_;
  std::condition_variable wake_, left_;
  Job* job_ = nullptr;  // the running job, under mutex_
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace kldiv

#endif  // KLDIV_CORE_THREAD_POOL_H_
