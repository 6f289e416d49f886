// attributes.h: reading a node's attributes and name from onnxruntime's kernel info.
#ifndef KLDIV_ORT_ATTRIBUTES_H_
#define KLDIV_ORT_ATTRIBUTES_H_

#include <string>

#include "kldiv_core.h"
#include "ort_api.h"
#include "row_kl.h"

namespace kldiv {
namespace ort {

// The loss configuration of one node.
struct Config {
  Reduction reduction = Reduction::kMean;
  bool log_target = false;
};

// Reads `reduction` (string) and `log_target` (int 0/1) into *config. onnxruntime validates no
// custom-op attribute and fills in no default: absent ones keep the value *config has on entry
// (the op's defaults). For a variant op (`fixed` true), present attributes must agree with
// *config. Returns "" or the message (without the op name) naming the attribute and value.
std::string ReadConfig(const OrtApi& api, const OrtKernelInfo* info, bool fixed, Config* config);

// The configuration of one KLDivRows node: `kind` (string, default "logits") and `temperature`
// (float, default 1.0, finite and > 0). Returns "" or the message (without the op name).
struct RowConfig {
  RowKind kind = RowKind::kLogits;
  float temperature = 1.0f;
};
std::string ReadRowConfig(const OrtApi& api, const OrtKernelInfo* info, RowConfig* config);

// The node's name ("" when it has none or it cannot be read).
std::string NodeName(const OrtApi& api, const OrtKernelInfo* info);

}  // namespace ort
}  // namespace kldiv

#endif  // KLDIV_ORT_ATTRIBUTES_H_
