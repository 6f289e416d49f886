// test_thread_pool_fork.cc: a process forked while another thread runs jobs on a ThreadPool can
// use that pool: the child has none of the workers, so its jobs run on the calling thread, and
// no lock that a vanished thread held at the fork is left taken. Each child must finish within
// a deadline (a deadlock fails the test instead of hanging it) with every index of its job.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "harness.h"
#include "thread_pool.h"

namespace kldiv_test {
namespace {

void AddIndex(void* data, std::size_t i) {
  static_cast<std::atomic<long>*>(data)->fetch_add(static_cast<long>(i));
}

// The child's part: one job of n indices on the inherited pool; exit status 0 if it ran every
// index once and on no worker (there are none after a fork), 1 otherwise.
[[noreturn]] void RunInChild(kldiv::ThreadPool& pool, std::size_t n) {
  std::atomic<long> sum{0};
  pool.Run(n, AddIndex, &sum, 4);
  const long expected = static_cast<long>(n * (n - 1) / 2);
  _exit(sum.load() == expected && pool.workers() == 0 ? 0 : 1);  // no atexit, no sanitizer report
}

// Waits for the child up to `deadline`; kills it after. Returns its exit status, or -1 when it
// was killed at the deadline.
int WaitWithDeadline(pid_t pid, std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

}  // namespace

void TestThreadPoolFork() {
  kldiv::ThreadPool pool(3);
  std::atomic<bool> stop{false};
  std::atomic<long> sink{0};
  std::thread busy([&] {  // the pool's lock and its workers busy most of the time
    while (!stop.load()) pool.Run(20000, AddIndex, &sink, 4);
  });
  constexpr int kForks = 24;
  int finished = 0, right = 0;
  for (int k = 0; k < kForks; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(300 * (k % 5)));
    const pid_t pid = fork();
    if (pid == 0) RunInChild(pool, 1000);
    if (pid < 0) break;
    const int status = WaitWithDeadline(pid, std::chrono::seconds(5));
    finished += status != -1;
    right += status == 0;
  }
  stop.store(true);
  busy.join();
  Check(finished == kForks, "thread pool after fork: " + std::to_string(kForks - finished) +
                                " of " + std::to_string(kForks) + " children hung");
  Check(right == finished, "thread pool after fork: " + std::to_string(finished - right) +
                               " children got a wrong sum or kept workers");
  // The parent's pool still works with its workers.
  std::atomic<long> sum{0};
  pool.Run(1000, AddIndex, &sum, 4);
  Check(sum.load() == 499500 && pool.workers() == 3, "thread pool: the parent's pool after forks");
}

}  // namespace kldiv_test
