// broadcast.cc: the numpy broadcast of the two operands, its check and message, and the plan
// (collapsed dims and element strides) the driver walks.
#include <algorithm>
#include <sstream>

#include "kldiv_core.h"

namespace kldiv {
namespace {

// A shape for messages; unknown dims (< 0, only in static checks) print as "?".
std::string Printable(const std::vector<int64_t>& shape, bool unknown_dims) {
  if (!unknown_dims) return ShapeToString(shape);
  std::string r = "[";
  for (std::size_t k = 0; k < shape.size(); ++k) {
    r += (k ? ", " : "") + (shape[k] < 0 ? std::string("?") : std::to_string(shape[k]));
  }
  return r + "]";
}

std::string Shapes(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& t_shape,
                   bool unknown_dims) {
  return "input shape " + Printable(x_shape, unknown_dims) + " and target shape " +
         Printable(t_shape, unknown_dims);
}

// The one broadcast rule: "" when every pair of right-aligned dims is equal or has a 1 (pairs
// with an unknown dim, < 0, pass), else the message naming the first dim that fails.
std::string Mismatch(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& t_shape,
                     bool unknown_dims) {
  const std::size_t rank = std::max(x_shape.size(), t_shape.size());
  for (std::size_t j = 0; j < rank; ++j) {
    const std::size_t xo = rank - x_shape.size(), to = rank - t_shape.size();
    const int64_t a = j < xo ? 1 : x_shape[j - xo];
    const int64_t b = j < to ? 1 : t_shape[j - to];
    if ((a < 0 || b < 0) && unknown_dims) continue;
    if (a != b && a != 1 && b != 1) {
      std::ostringstream os;
      os << Shapes(x_shape, t_shape, unknown_dims) << " are not broadcastable (dim "
         << static_cast<int64_t>(j) - static_cast<int64_t>(rank) << ": " << a << " vs " << b << ")";
      return os.str();
    }
  }
  return "";
}

// Product of the dims into *result; false on int64 overflow (a zero dim makes it 0, no
// overflow).
bool Product(const std::vector<int64_t>& s, int64_t* result) {
  int64_t p = 1;
  bool zero = false;
  bool overflow = false;
  for (int64_t d : s) {
    if (d == 0) zero = true;
    if (!overflow && __builtin_mul_overflow(p, d, &p)) overflow = true;
  }
  *result = zero ? 0 : p;
  return zero || !overflow;
}

}  // namespace

std::string CheckBroadcastable(const std::vector<int64_t>& x_shape,
                               const std::vector<int64_t>& t_shape) {
  return Mismatch(x_shape, t_shape, /*unknown_dims=*/true);
}

std::string MakeBroadcastPlan(const std::vector<int64_t>& x_shape,
                              const std::vector<int64_t>& t_shape, BroadcastPlan* plan) {
  const auto shapes = [&] { return Shapes(x_shape, t_shape, false); };
  if (x_shape.size() > kMaxRank || t_shape.size() > kMaxRank) {
    return shapes() + ": rank above " + std::to_string(kMaxRank) + " is not supported";
  }
  for (const auto* shape : {&x_shape, &t_shape}) {
    for (int64_t d : *shape) {
      if (d < 0) return shapes() + ": negative dimension";
    }
  }
  std::string error = Mismatch(x_shape, t_shape, false);
  if (!error.empty()) return error;
  const std::size_t rank = std::max(x_shape.size(), t_shape.size());
  std::vector<int64_t> xs(rank, 1), ts(rank, 1), out(rank, 1);
  std::copy(x_shape.begin(), x_shape.end(), xs.begin() + (rank - x_shape.size()));
  std::copy(t_shape.begin(), t_shape.end(), ts.begin() + (rank - t_shape.size()));
  for (std::size_t j = 0; j < rank; ++j) out[j] = xs[j] == 1 ? ts[j] : xs[j];
  // Element counts, with overflow checks (a broadcast can be far larger than either input).
  BroadcastPlan p;
  if (!Product(out, &p.count) || !Product(xs, &p.x_count) || !Product(ts, &p.t_count)) {
    return shapes() + ": the broadcast shape " + ShapeToString(out) +
           " has more than 2**63 elements";
  }
  p.out_shape = out;
  if (p.count > 1) {
    // Row-major element strides of each operand in the padded rank; 0 where broadcast.
    std::vector<int64_t> sx(rank), st(rank);
    int64_t ax = 1, at = 1;
    for (std::size_t jj = rank; jj-- > 0;) {
      sx[jj] = xs[jj] == 1 ? 0 : ax;
      st[jj] = ts[jj] == 1 ? 0 : at;
      ax *= xs[jj];
      at *= ts[jj];
    }
    for (std::size_t j = 0; j < rank; ++j) {
      if (out[j] == 1) continue;  // size-1 dims index nothing
      if (!p.dims.empty() && p.x_strides.back() == sx[j] * out[j] &&
          p.t_strides.back() == st[j] * out[j]) {
        // The previous (outer) dim steps both operands exactly like one more run of this dim.
        p.dims.back() *= out[j];
        p.x_strides.back() = sx[j];
        p.t_strides.back() = st[j];
      } else {
        p.dims.push_back(out[j]);
        p.x_strides.push_back(sx[j]);
        p.t_strides.push_back(st[j]);
      }
    }
  }
  *plan = std::move(p);
  return "";
}

std::vector<int64_t> OutputShape(const BroadcastPlan& plan, Reduction reduction) {
  return reduction == Reduction::kNone ? plan.out_shape : std::vector<int64_t>{};
}

}  // namespace kldiv
