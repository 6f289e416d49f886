// test_thread_pool.cc: ThreadPool runs every index once, on at most the threads asked for, one
// job at a time from several callers, and gives ComputeRowKL the bits of a serial run.
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "harness.h"
#include "row_kl.h"
#include "thread_pool.h"

namespace kldiv_test {

void TestThreadPool() {
  kldiv::ThreadPool pool(3);
  Check(pool.workers() == 3, "three workers");

  // Every index once, for many short jobs in a row (workers joining late or not at all).
  bool once = true;
  for (std::size_t n : {0u, 1u, 2u, 5u, 64u, 1000u}) {
    for (int threads : {1, 2, 4, 9}) {
      for (int round = 0; round < 50; ++round) {
        std::vector<std::atomic<int>> hits(n);
        pool.Run(
            n,
            [](void* data, std::size_t i) {
              (*static_cast<std::vector<std::atomic<int>>*>(data))[i].fetch_add(1);
            },
            &hits, threads);
        for (auto& h : hits) once = once && h.load() == 1;
      }
    }
  }
  Check(once, "thread pool: every index exactly once");

  // At most `threads` threads at once.
  struct Count {
    std::atomic<int> now{0}, most{0};
  } count;
  pool.Run(
      64,
      [](void* data, std::size_t) {
        auto& c = *static_cast<Count*>(data);
        const int now = c.now.fetch_add(1) + 1;
        for (int m = c.most.load(); now > m && !c.most.compare_exchange_weak(m, now);) {
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        c.now.fetch_sub(1);
      },
      &count, 2);
  Check(count.most.load() <= 2,
        "thread pool: at most 2 threads, saw " + std::to_string(count.most.load()));

  // Two callers at once take turns; each gets all of its own indices.
  std::atomic<long> sums[2] = {{0}, {0}};
  std::vector<std::thread> callers;
  for (int k = 0; k < 2; ++k) {
    callers.emplace_back([&, k] {
      for (int round = 0; round < 200; ++round) {
        pool.Run(
            100,
            [](void* data, std::size_t i) {
              static_cast<std::atomic<long>*>(data)->fetch_add(static_cast<long>(i));
            },
            &sums[k], 4);
      }
    });
  }
  for (auto& t : callers) t.join();
  Check(sums[0].load() == 200L * 4950 && sums[1].load() == 200L * 4950,
        "thread pool: two callers, every index of each");

  // ComputeRowKL through the pool, small tasks: the serial bits.
  std::mt19937 gen(3);
  std::normal_distribution<float> normal;
  for (int64_t classes : {10, 300}) {
    const int64_t rows = 777;
    std::vector<float> b(static_cast<size_t>(rows * classes)), c(b.size());
    for (size_t i = 0; i < b.size(); ++i) {
      b[i] = 3 * normal(gen);
      c[i] = b[i] + 0.1f * normal(gen);
    }
    kldiv::RowProblem p;
    p.base = b.data();
    p.candidate = c.data();
    p.rows = rows;
    p.classes = classes;
    std::vector<double> serial(rows), pooled(rows);
    std::unique_ptr<bool[]> agree_serial(new bool[rows]), agree_pooled(new bool[rows]);
    kldiv::ComputeRowKL(p, serial.data(), agree_serial.get(), kldiv::SerialFor);
    const kldiv::ParallelFor on_pool = [&pool](std::size_t n, void (*fn)(void*, std::size_t),
                                               void* data) { pool.Run(n, fn, data, 4); };
    kldiv::ComputeRowKL(p, pooled.data(), agree_pooled.get(), on_pool, 1 << 10);
    bool same = true;
    for (int64_t r = 0; r < rows; ++r) {
      same = same && std::memcmp(&serial[r], &pooled[r], sizeof(double)) == 0 &&
             agree_serial[r] == agree_pooled[r];
    }
    Check(same, "thread pool: ComputeRowKL bits, classes " + std::to_string(classes));
  }
}

}  // namespace kldiv_test
