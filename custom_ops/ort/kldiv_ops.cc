// kldiv_ops.cc: the op table of the kldiv_onnx domain and its registration.
//
// Op names (mirrors kldiv_onnx/_contract.py; tests run every contract name through the loaded
// library): "KLDivLoss" with attributes reduction (string, default "mean") and log_target (int,
// 0/1, default 0), and eight variants whose configuration is their name: "KLDivLoss_none",
// "KLDivLoss_mean", "KLDivLoss_sum", "KLDivLoss_batchmean", and the same with the suffix
// "_logtarget". Each is registered for float32, float16 and bfloat16 (one op per dtype, same
// name: onnxruntime picks the kernel by the node's input types). And "KLDivRows"
// (row_kl_op.h): the per-row KL of two float32 outputs, for `compare`.
#include "kldiv_ops.h"

#include <iterator>
#include <mutex>
#include <vector>

#include "kernel.h"
#include "row_kl_op.h"

namespace kldiv {
namespace ort {
namespace {

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

constexpr const char* kGenericOp = "KLDivLoss";
constexpr struct {
  const char* name;
  Reduction reduction;
  bool log_target;
} kVariants[] = {
    {"KLDivLoss_none", Reduction::kNone, false},
    {"KLDivLoss_mean", Reduction::kMean, false},
    {"KLDivLoss_sum", Reduction::kSum, false},
    {"KLDivLoss_batchmean", Reduction::kBatchMean, false},
    {"KLDivLoss_none_logtarget", Reduction::kNone, true},
    {"KLDivLoss_mean_logtarget", Reduction::kMean, true},
    {"KLDivLoss_sum_logtarget", Reduction::kSum, true},
    {"KLDivLoss_batchmean_logtarget", Reduction::kBatchMean, true},
};

std::vector<KLDivOp>& Ops() {
  static std::vector<KLDivOp>* ops = [] {
    // Never freed: onnxruntime may still use the ops while static destructors run at exit.
    auto* v = new std::vector<KLDivOp>();
    v->reserve(std::size(kDTypes) * (1 + std::size(kVariants)));  // no reallocation below
    for (DType dtype : kDTypes) {
      v->emplace_back(kGenericOp, dtype, true, Config{});
      for (const auto& variant : kVariants) {
        v->emplace_back(variant.name, dtype, false, Config{variant.reduction, variant.log_target});
      }
    }
    return v;
  }();
  return *ops;
}

}  // namespace

OrtCustomOpDomain* GetDomain(const OrtApi& api, OrtStatus** error) {
  // Built once, all or nothing: a half-filled domain is released and never handed out.
  static std::mutex mutex;
  static OrtCustomOpDomain* domain = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (domain != nullptr) return domain;
  OrtCustomOpDomain* candidate = nullptr;
  if (OrtStatus* s = api.CreateCustomOpDomain(kDomain, &candidate)) {
    *error = s;
    return nullptr;
  }
  static RowKLOp* row_kl = new RowKLOp();  // never freed, as Ops()
  std::vector<OrtCustomOp*> ops;
  for (KLDivOp& op : Ops()) ops.push_back(&op);
  ops.push_back(row_kl);
  for (OrtCustomOp* op : ops) {
    if (OrtStatus* s = api.CustomOpDomain_Add(candidate, op)) {
      api.ReleaseCustomOpDomain(candidate);
      *error = s;
      return nullptr;
    }
  }
  domain = candidate;
  return domain;
}

}  // namespace ort
}  // namespace kldiv
