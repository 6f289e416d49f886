// kernel.h: the KLDivLoss op for one dtype (onnxruntime's OrtCustomOp through CustomOpBase) and
// its kernel, a thin layer over the numeric core: inputs and attributes in, core call, statuses
// out. Errors travel as OrtStatus (WithStatus=true); no exception leaves a callback.
#ifndef KLDIV_ORT_KERNEL_H_
#define KLDIV_ORT_KERNEL_H_

#include <string>

#include "attributes.h"
#include "kldiv_core.h"
#include "kldiv_ops.h"
#include "op_support.h"
#include "ort_api.h"

namespace kldiv {
namespace ort {

// ONNX element type of a dtype, and back (false for a type the library does not handle).
ONNXTensorElementDataType OnnxType(DType t);
bool DTypeOf(ONNXTensorElementDataType t, DType* out);
// "float32", ... for the handled types, else "ONNX element type N".
std::string ElementTypeName(ONNXTensorElementDataType t);

class KLDivKernel : KernelBase {
 public:
  KLDivKernel(std::string prefix, DType dtype, Config config)
      : KernelBase(std::move(prefix)), dtype_(dtype), config_(config) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept;

 private:
  DType dtype_;
  Config config_;
};

class KLDivOp : public Ort::CustomOpBase<KLDivOp, KLDivKernel, true> {
 public:
  // generic: the "KLDivLoss" op, configured by attributes; otherwise `fixed` is the name's.
  KLDivOp(std::string name, DType dtype, bool generic, Config fixed)
      : name_(std::move(name)), dtype_(dtype), generic_(generic), fixed_(fixed) {
    OrtCustomOp::version = kOrtApiVersion;
  }

  const char* GetName() const { return name_.c_str(); }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t) const { return OnnxType(dtype_); }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return OnnxType(dtype_); }

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                              void** kernel) const noexcept;

 private:
  // The node's configuration, and its input types and shapes where the graph knows them;
  // "" or a message without the op name.
  std::string Check(const OrtApi& api, const OrtKernelInfo* info, Config* config) const;

  std::string name_;
  DType dtype_;
  bool generic_;
  Config fixed_;
};

}  // namespace ort
}  // namespace kldiv

#endif  // KLDIV_ORT_KERNEL_H_
