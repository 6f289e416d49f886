// scalar_kernels.cc: the portable loops, for CPUs without AVX2 (plain libm log/exp, the same
// semantics as the vector loops of simd_tables.cc).
#include <cmath>

#include "kldiv_core.h"
#include "kldiv_kernels.h"

namespace kldiv {
namespace detail {
namespace {

template <DType kT>
float Load(const void* p, int64_t i) {
  if constexpr (kT == DType::kFloat32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (kT == DType::kFloat16) {
    return HalfToFloat(static_cast<const uint16_t*>(p)[i]);
  } else {
    return BFloat16ToFloat(static_cast<const uint16_t*>(p)[i]);
  }
}

template <DType kT>
void Store(void* p, int64_t i, float v) {
  if constexpr (kT == DType::kFloat32) {
    static_cast<float*>(p)[i] = v;
  } else if constexpr (kT == DType::kFloat16) {
    static_cast<uint16_t*>(p)[i] = FloatToHalf(v);
  } else {
    static_cast<uint16_t*>(p)[i] = FloatToBFloat16(v);
  }
}

template <bool kLogTarget>
float ScalarLoss(float x, float t) {
  if constexpr (kLogTarget) {
    return std::exp(t) * (t - x);
  } else {
    return t == 0.0f ? 0.0f : t * (std::log(t) - x);
  }
}

template <DType kT, bool kLogTarget>
void ScalarPointwise(const void* x, int64_t sx, const void* t, int64_t st, int64_t n, void* out) {
  for (int64_t i = 0; i < n; ++i) {
    Store<kT>(out, i, ScalarLoss<kLogTarget>(Load<kT>(x, i * sx), Load<kT>(t, i * st)));
  }
}

template <DType kT, bool kLogTarget>
double ScalarSum(const void* x, int64_t sx, const void* t, int64_t st, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += ScalarLoss<kLogTarget>(Load<kT>(x, i * sx), Load<kT>(t, i * st));
  }
  return acc;
}

}  // namespace

const Kernels* ScalarKernels() {
  static const Kernels table = {
      "scalar",
      {{ScalarPointwise<DType::kFloat32, false>, ScalarPointwise<DType::kFloat32, true>},
       {ScalarPointwise<DType::kFloat16, false>, ScalarPointwise<DType::kFloat16, true>},
       {ScalarPointwise<DType::kBFloat16, false>, ScalarPointwise<DType::kBFloat16, true>}},
      {{ScalarSum<DType::kFloat32, false>, ScalarSum<DType::kFloat32, true>},
       {ScalarSum<DType::kFloat16, false>, ScalarSum<DType::kFloat16, true>},
       {ScalarSum<DType::kBFloat16, false>, ScalarSum<DType::kBFloat16, true>}},
      nullptr,  // compare's rows: the float64 path
  };
  return &table;
}

}  // namespace detail
}  // namespace kldiv
