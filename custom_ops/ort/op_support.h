// op_support.h: what the kernels of both ops (kernel.h, row_kl_op.h) share: the start of their
// messages, statuses built from them, the session's intra-op pool as the core's ParallelFor,
// and the guard that turns any exception into a status (no exception leaves a callback).
#ifndef KLDIV_ORT_OP_SUPPORT_H_
#define KLDIV_ORT_OP_SUPPORT_H_

#include <exception>
#include <string>

#include "kldiv_core.h"
#include "ort_api.h"

namespace kldiv {
namespace ort {

// "op (node 'name')", or just the op name for a node without one.
std::string MessagePrefix(const OrtApi& api, const OrtKernelInfo* info, const std::string& op);

// A status of `code` whose message is "prefix: message".
OrtStatusPtr Status(const OrtApi& api, OrtErrorCode code, const std::string& prefix,
                    const std::string& message);

// Takes ownership of `status` and returns its message.
std::string TakeMessage(const OrtApi& api, OrtStatus* status);

// The session's intra-op pool (KernelContext_ParallelFor; with one thread onnxruntime runs the
// calls inline). The first failure is kept in *status (the caller owns it) and the calls after
// it are skipped.
ParallelFor SessionPool(OrtKernelContext* context, OrtStatus** status);

// body(), or a status "prefix: what" for whatever it throws.
template <class Body>
OrtStatusPtr Guarded(const OrtApi& api, const std::string& prefix, Body&& body) noexcept {
  try {
    return body();
  } catch (const Ort::Exception& e) {
    return Status(api, e.GetOrtErrorCode(), prefix, e.what());
  } catch (const std::exception& e) {
    return Status(api, ORT_FAIL, prefix, e.what());
  } catch (...) {
    return Status(api, ORT_FAIL, prefix, "unknown error");
  }
}

// What both kernels hold: the message prefix of their node, and statuses that start with it.
class KernelBase {
 protected:
  explicit KernelBase(std::string prefix) : prefix_(std::move(prefix)) {}
  OrtStatusPtr Error(OrtErrorCode code, const std::string& message) const {
    return Status(Ort::GetApi(), code, prefix_, message);
  }

  std::string prefix_;  // op name and node name, the start of every message
};

}  // namespace ort
}  // namespace kldiv

#endif  // KLDIV_ORT_OP_SUPPORT_H_
