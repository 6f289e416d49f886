// op_support.cc: messages, statuses and the session pool shared by the ops' kernels.
#include "op_support.h"

#include "attributes.h"

namespace kldiv {
namespace ort {

std::string MessagePrefix(const OrtApi& api, const OrtKernelInfo* info, const std::string& op) {
  const std::string node = NodeName(api, info);
  return node.empty() ? op : op + " (node '" + node + "')";
}

OrtStatusPtr Status(const OrtApi& api, OrtErrorCode code, const std::string& prefix,
                    const std::string& message) {
  return api.CreateStatus(code, (prefix + ": " + message).c_str());
}

std::string TakeMessage(const OrtApi& api, OrtStatus* status) {
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  return message;
}

ParallelFor SessionPool(OrtKernelContext* context, OrtStatus** status) {
  return [context, status](std::size_t n, void (*fn)(void*, std::size_t), void* data) {
    if (*status != nullptr) return;
    *status = Ort::GetApi().KernelContext_ParallelFor(context, fn, n, 0, data);
  };
}

}  // namespace ort
}  // namespace kldiv
