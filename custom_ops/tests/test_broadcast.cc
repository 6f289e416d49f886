// test_broadcast.cc: the broadcast plan (collapsed dims and strides), its errors, and the static
// check the ORT layer shares.
#include <string>

#include "harness.h"

namespace kldiv_test {

void TestPlan() {
  BroadcastPlan p;
  Check(kldiv::MakeBroadcastPlan({2, 3, 4}, {2, 3, 4}, &p).empty() &&
            p.dims == std::vector<int64_t>{24},
        "plan: equal shapes collapse to one dim");
  Check(kldiv::MakeBroadcastPlan({5, 1}, {1, 7}, &p).empty() &&
            p.dims == std::vector<int64_t>({5, 7}) && p.x_strides == std::vector<int64_t>({1, 0}) &&
            p.t_strides == std::vector<int64_t>({0, 1}),
        "plan: outer product");
  Check(kldiv::MakeBroadcastPlan({8, 3, 4}, {3, 4}, &p).empty() &&
            p.dims == std::vector<int64_t>({8, 12}) && p.t_strides == std::vector<int64_t>({0, 1}),
        "plan: leading broadcast");
  Check(kldiv::MakeBroadcastPlan({}, {}, &p).empty() && p.count == 1 && p.dims.empty() &&
            p.out_shape.empty(),
        "plan: 0-d");
  Check(kldiv::MakeBroadcastPlan({3, 0}, {1}, &p).empty() && p.count == 0 &&
            p.out_shape == std::vector<int64_t>({3, 0}),
        "plan: empty");
  const std::string e = kldiv::MakeBroadcastPlan({2, 3}, {4}, &p);
  Check(e.find("not broadcastable") != std::string::npos && e.find("[2, 3]") != std::string::npos &&
            e.find("[4]") != std::string::npos && e.find("3 vs 4") != std::string::npos,
        "plan error message: " + e);
  Check(!kldiv::MakeBroadcastPlan({0}, {2}, &p).empty(), "plan: 0 vs 2 is an error");
  Check(!kldiv::MakeBroadcastPlan({1LL << 40, 1}, {1, 1LL << 40}, &p).empty(),
        "plan: broadcast overflowing int64 is an error");
  Check(!kldiv::MakeBroadcastPlan({-1}, {2}, &p).empty(), "plan: negative dim is an error");
}

void TestStaticCheck() {
  // The broadcast check the ORT layer runs on static shapes: unknown dims (-1) pass.
  Check(kldiv::CheckBroadcastable({-1, 5}, {3, 5}).empty(), "static check: unknown dim passes");
  Check(kldiv::CheckBroadcastable({}, {7, -1}).empty(), "static check: 0-d against anything");
  const std::string e = kldiv::CheckBroadcastable({4, -1, 5}, {3});
  Check(e == "input shape [4, ?, 5] and target shape [3] are not broadcastable (dim -1: 5 vs 3)",
        "static check message: " + e);
  BroadcastPlan p;
  const std::string same = kldiv::MakeBroadcastPlan({4, 2, 5}, {3}, &p);
  Check(same == "input shape [4, 2, 5] and target shape [3] are not broadcastable (dim -1: 5 vs 3)",
        "plan and static check share the message: " + same);
}

}  // namespace kldiv_test
