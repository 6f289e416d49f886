// kldiv_ops.h: the kldiv_onnx custom-op domain (kldiv_ops.cc) and the C API version it needs.
#ifndef KLDIV_ORT_KLDIV_OPS_H_
#define KLDIV_ORT_KLDIV_OPS_H_

#include "ort_api.h"

namespace kldiv {
namespace ort {

// Lowest onnxruntime C API version with everything used here: CreateKernelV2/KernelComputeV2
// (16), KernelContext_ParallelFor (17); the rest (attributes, KernelInfo_GetNodeName,
// KernelInfo_GetInputTypeInfo, tensor access) is older. Requested in RegisterCustomOps and
// written into every OrtCustomOp::version, so onnxruntime reads no field newer than this.
constexpr uint32_t kOrtApiVersion = 17;
constexpr const char* kMinOrtRelease = "1.17";

constexpr const char* kDomain = "kldiv_onnx";

// Creates the custom-op domain with every op of the library (nine names, three dtypes each,
// and KLDivRows),
// once per process; returns nullptr with *error set (ownership passes to the caller) if any
// step fails. The domain and the ops live in static storage and are never released.
OrtCustomOpDomain* GetDomain(const OrtApi& api, OrtStatus** error);

}  // namespace ort
}  // namespace kldiv

#endif  // KLDIV_ORT_KLDIV_OPS_H_
