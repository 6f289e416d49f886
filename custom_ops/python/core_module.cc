// core_module.cc: kldiv_onnx._core, the numeric core's per-row KL called from Python without
// onnxruntime (nanobind), on the caller's thread and a pool of the core's (thread_pool.h).
// `compare` runs its batches here: one onnxruntime run from Python costs about 20 us on this
// project's machines, more than the KL of a 256 x 10 batch, and a ctypes call about 5 us (its
// argument conversion). The same core source as the KLDivRows op, so both give the same bits.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kldiv_core.h"
#include "row_kl.h"
#include "thread_pool.h"

namespace nb = nanobind;

namespace {

// Inputs may be converted (a float64 or strided array is copied to C-contiguous float32).
using Rows = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
// Outputs are taken as they are (noconvert: a converted output would be a temporary copy, and
// the caller's array would never see the results) and checked in CheckOutput.
using Output = nb::ndarray<nb::device::cpu>;

// Elements per task: about 20 us of work. A smaller batch (256 x 30) runs on the caller alone:
// waking a worker takes about 10 us, and the caller would be done before the worker helped.
constexpr int64_t kTaskElements = 1 << 13;

// numpy's name of a DLPack dtype ("float32", "int64", "bool"; "other16" for the rest).
std::string DTypeName(nb::dlpack::dtype dtype) {
  using Code = nb::dlpack::dtype_code;
  const auto code = static_cast<Code>(dtype.code);
  if (code == Code::Bool) return "bool";
  const char* kind = code == Code::Int     ? "int"
                     : code == Code::UInt  ? "uint"
                     : code == Code::Float ? "float"
                                           : "other";
  return kind + std::to_string(dtype.bits);
}

// An output must be what the results are written into: a writable (nanobind checks that)
// 1-D C-contiguous array of `rows` elements of the dtype T. TypeError for another dtype,
// ValueError for another shape or a strided array.
template <typename T>
T* CheckOutput(const Output& out, const char* name, const char* dtype, int64_t rows) {
  if (out.dtype() != nb::dtype<T>()) {
    throw nb::type_error(
        (std::string(name) + " must be a " + dtype + " array, not " + DTypeName(out.dtype()))
            .c_str());
  }
  if (out.ndim() != 1 || static_cast<int64_t>(out.shape(0)) != rows) {
    std::string shape;
    for (std::size_t k = 0; k < out.ndim(); ++k) {
      shape += (k ? ", " : "") + std::to_string(out.shape(k));
    }
    throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(rows) +
                                ",) (one value per row), not (" + shape +
                                (out.ndim() == 1 ? ",)" : ")"));
  }
  if (rows > 1 && out.stride(0) != 1) {
    throw std::invalid_argument(std::string(name) +
                                " must be C-contiguous (the results are written into it), not "
                                "strided");
  }
  return static_cast<T*>(out.data());
}

void RowKL(const Rows& base, const Rows& candidate, const std::string& kind, float temperature,
           const Output& kl, const Output& agree, int threads) {
  kldiv::RowProblem problem;
  if (!kldiv::ParseRowKind(kind, &problem.kind)) {
    throw std::invalid_argument("kind '" + kind + "' is not logits, log-probs or probs");
  }
  const auto rows = static_cast<int64_t>(base.shape(0));
  if (candidate.shape(0) != base.shape(0) || candidate.shape(1) != base.shape(1)) {
    throw std::invalid_argument("base and candidate disagree on the shape");
  }
  double* kl_out = CheckOutput<double>(kl, "kl", "float64", rows);
  bool* agree_out = CheckOutput<bool>(agree, "agree", "bool", rows);
  problem.base = base.data();
  problem.candidate = candidate.data();
  problem.rows = rows;
  problem.classes = static_cast<int64_t>(base.shape(1));
  problem.temperature = temperature;
  const std::string error = kldiv::CheckRowProblem(problem);
  if (!error.empty()) throw std::invalid_argument(error);
  if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0: every core)");
  const int use = threads == 0 ? kldiv::CoreCount() : threads;
  // first made with the GIL held, so that no Python thread forks while it is being made
  kldiv::ThreadPool& workers = kldiv::ProcessPool();
  nb::gil_scoped_release release;  // the arrays stay referenced by the caller's arguments
  const kldiv::ParallelFor pool = [use, &workers](std::size_t n, void (*fn)(void*, std::size_t),
                                                  void* data) { workers.Run(n, fn, data, use); };
  kldiv::ComputeRowKL(problem, kl_out, agree_out, pool, kTaskElements);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "The numeric core's per-row KL (KLDivRows) called without onnxruntime.";
  m.def("row_kl", &RowKL, nb::arg("base"), nb::arg("candidate"), nb::arg("kind"),
        nb::arg("temperature"), nb::arg("kl").noconvert(), nb::arg("agree").noconvert(),
        nb::arg("threads") = 0,
        "KLDivRows of 2-D float32 rows (other arrays are converted) into kl and agree, 1-D "
        "C-contiguous float64 and bool arrays of one element per row (TypeError for another "
        "dtype, ValueError for another shape or a strided array), on this thread and threads - 1 "
        "of the module's pool (0: every core), with the GIL released.");
  m.def(
      "cap_target", [](const std::string& cap) { return kldiv::CapTarget(cap); }, nb::arg("cap"),
      "Caps the SIMD target as KLDIV_ONNX_ISA does: '' or the message for an unknown name.");
  m.def("active_target", [] { return std::string(kldiv::ActiveTarget()); });
}
