// kldiv_kernels.h: internal interface between the driver (driver.cc), the target selection
// (dispatch.cc) and the per-ISA loops (simd_tables.cc: AVX-512 and AVX2 via Highway, NEON;
// simd_tables_sve.cc: SVE; scalar_kernels.cc: the portable fallback).
#ifndef KLDIV_CORE_KLDIV_KERNELS_H_
#define KLDIV_CORE_KLDIV_KERNELS_H_

#include <cstdint>

#include "row_kl.h"

namespace kldiv {
namespace detail {

// One run of n output elements: operand x is read at x[i * sx], t at t[i * st], sx and st in
// {0, 1} (0: broadcast scalar). Pointers are to elements of the dtype the table entry is for.
using PointwiseFn = void (*)(const void* x, int64_t sx, const void* t, int64_t st, int64_t n,
                             void* out);
// Sum of the run's losses, accumulated in double.
using SumFn = double (*)(const void* x, int64_t sx, const void* t, int64_t st, int64_t n);

// compare's per-row KL for rows [begin, end) (row_kl.h).
using RowKLFn = void (*)(const RowProblem& problem, int64_t begin, int64_t end, double* kl,
                         bool* agree);

struct Kernels {
  const char* name;
  PointwiseFn pointwise[3][2];  // [DType][log_target]
  SumFn sum[3][2];
  RowKLFn row_kl;  // nullptr: every row on the float64 path (RowKLDouble)
};

// nullptr where the ISA was not compiled in (non-x86 builds).
const Kernels* Avx3Kernels();
const Kernels* Avx2Kernels();
const Kernels* NeonKernels();  // nullptr where not compiled in (non-aarch64 builds)
// simd_tables_sve.cc, compiled for SVE: call only where the CPU has SVE. nullptr where not
// compiled in.
const Kernels* SveKernels();
const Kernels* ScalarKernels();

// The loops of the active target (dispatch.cc).
const Kernels* ActiveKernels();

}  // namespace detail
}  // namespace kldiv

#endif  // KLDIV_CORE_KLDIV_KERNELS_H_
