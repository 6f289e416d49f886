// core_module.cc: kldiv_onnx._core, the numeric core's per-row KL called from Python without
// onnxruntime (nanobind), on the caller's thread and a pool of the core's (thread_pool.h).
// `compare` runs its batches here: one onnxruntime run from Python costs about 20 us on this
// project's machines, more than the KL of a 256 x 10 batch, and a ctypes call about 5 us (its
// argument conversion). The same core source as the KLDivRows op, so both give the same bits.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

#include "kldiv_core.h"
#include "row_kl.h"
#include "thread_pool.h"

namespace nb = nanobind;

namespace {

using Rows = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Doubles = nb::ndarray<double, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Flags = nb::ndarray<bool, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Elements per task: about 20 us of work. A smaller batch (256 x 30) runs on the caller alone:
// waking a worker takes about 10 us, and the caller would be done before the worker helped.
constexpr int64_t kTaskElements = 1 << 13;

// Read once: std::thread::hardware_concurrency reads /sys on every call (about 5 us).
int Cores() {
  static const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return cores;
}

// Never destroyed: the workers end with the process (joining them from a static destructor
// could hang a forked child, which has none of them; there Run does every task on the caller).
kldiv::ThreadPool& Pool() {
  static kldiv::ThreadPool* pool = new kldiv::ThreadPool(Cores() - 1);
  return *pool;
}

void RowKL(const Rows& base, const Rows& candidate, const std::string& kind, float temperature,
           const Doubles& kl, const Flags& agree, int threads) {
  kldiv::RowProblem problem;
  if (!kldiv::ParseRowKind(kind, &problem.kind)) {
    throw std::invalid_argument("kind '" + kind + "' is not logits, log-probs or probs");
  }
  const auto rows = static_cast<int64_t>(base.shape(0));
  if (candidate.shape(0) != base.shape(0) || candidate.shape(1) != base.shape(1) ||
      kl.shape(0) != base.shape(0) || agree.shape(0) != base.shape(0)) {
    throw std::invalid_argument("base, candidate, kl and agree disagree on the rows");
  }
  problem.base = base.data();
  problem.candidate = candidate.data();
  problem.rows = rows;
  problem.classes = static_cast<int64_t>(base.shape(1));
  problem.temperature = temperature;
  const std::string error = kldiv::CheckRowProblem(problem);
  if (!error.empty()) throw std::invalid_argument(error);
  if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0: every core)");
  const int use = threads == 0 ? Cores() : threads;
  nb::gil_scoped_release release;  // the arrays stay referenced by the caller's arguments
  const kldiv::ParallelFor pool = [use](std::size_t n, void (*fn)(void*, std::size_t), void* data) {
    Pool().Run(n, fn, data, use);
  };
  kldiv::ComputeRowKL(problem, kl.data(), agree.data(), pool, kTaskElements);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "The numeric core's per-row KL (KLDivRows) called without onnxruntime.";
  m.def("row_kl", &RowKL, nb::arg("base"), nb::arg("candidate"), nb::arg("kind"),
        nb::arg("temperature"), nb::arg("kl"), nb::arg("agree"), nb::arg("threads") = 0,
        "KLDivRows of 2-D C-contiguous float32 rows into kl (float64) and agree (bool), on this "
        "thread and threads - 1 of the module's pool (0: every core), with the GIL released.");
  m.def(
      "cap_target", [](const std::string& cap) { return kldiv::CapTarget(cap); }, nb::arg("cap"),
      "Caps the SIMD target as KLDIV_ONNX_ISA does: '' or the message for an unknown name.");
  m.def("active_target", [] { return std::string(kldiv::ActiveTarget()); });
}
