// row_kl_op.h: the KLDivRows op (onnxruntime's OrtCustomOp through CustomOpBase) and its kernel,
// a thin layer over the core's ComputeRowKL (row_kl.h).
//   inputs:  base, candidate: float32, the same shape (..., classes), classes >= 1
//   outputs: kl: float64 (...), KL(P_base || P_candidate) of each row;
//            agree: bool (...), whether both rows have the same argmax (numpy's)
//   attributes: kind ("logits", "log-probs", "probs"), temperature (float, logits only)
#ifndef KLDIV_ORT_ROW_KL_OP_H_
#define KLDIV_ORT_ROW_KL_OP_H_

#include <string>

#include "attributes.h"
#include "kldiv_ops.h"
#include "op_support.h"
#include "ort_api.h"
#include "row_kl.h"

namespace kldiv {
namespace ort {

constexpr const char* kRowKLOp = "KLDivRows";

class RowKLKernel : KernelBase {
 public:
  RowKLKernel(std::string prefix, RowConfig config)
      : KernelBase(std::move(prefix)), config_(config) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept;

 private:
  RowConfig config_;
};

class RowKLOp : public Ort::CustomOpBase<RowKLOp, RowKLKernel, true> {
 public:
  RowKLOp() { OrtCustomOp::version = kOrtApiVersion; }

  const char* GetName() const { return kRowKLOp; }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetOutputType(size_t i) const {
    return i == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE : ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                              void** kernel) const noexcept;
};

}  // namespace ort
}  // namespace kldiv

#endif  // KLDIV_ORT_ROW_KL_OP_H_
