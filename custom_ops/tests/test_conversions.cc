// test_conversions.cc: the scalar float16 / bfloat16 conversions against the compiler's
// _Float16 and exact distance references.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "harness.h"

namespace kldiv_test {
namespace {
// The compiler's IEEE half type: GCC 12 on aarch64 has no _Float16 in C++, only the ACLE's
// __fp16 (an IEEE half there, converting with one correct rounding like _Float16).
#if defined(__aarch64__) && !defined(__clang__)
using Half = __fp16;
#else
using Half = _Float16;
#endif
}  // namespace

void TestConversions() {
  // float16: every bit pattern survives float16 -> float32 -> float16 (NaN stays NaN).
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = kldiv::HalfToFloat(static_cast<uint16_t>(h));
    const Half ref = [&] {
      Half r;
      uint16_t b = static_cast<uint16_t>(h);
      std::memcpy(&r, &b, 2);
      return r;
    }();
    if (std::isnan(f) != std::isnan(static_cast<float>(ref))) ++bad;
    if (!std::isnan(f) && f != static_cast<float>(ref)) ++bad;
    if (!std::isnan(f) && kldiv::FloatToHalf(f) != h) ++bad;
  }
  Check(bad == 0, "float16 -> float32 exact and round trip");
  // float32 -> float16 rounding against the compiler's _Float16 conversion (round to nearest
  // even), over random bit patterns and the values around every float16.
  std::mt19937 gen(7);
  bad = 0;
  auto check_half = [&](float f) {
    const Half r = static_cast<Half>(f);
    uint16_t want;
    std::memcpy(&want, &r, 2);
    const uint16_t got = kldiv::FloatToHalf(f);
    if (std::isnan(f)) {
      if ((got & 0x7C00u) != 0x7C00u || (got & 0x3FFu) == 0) ++bad;
    } else if (got != want) {
      if (bad < 3) std::printf("  FloatToHalf(%.9g) = %04x want %04x\n", f, got, want);
      ++bad;
    }
  };
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t b = gen();
    float f;
    std::memcpy(&f, &b, 4);
    check_half(f);
  }
  for (uint32_t h = 0; h < 0x7C00u; ++h) {
    const float f = kldiv::HalfToFloat(static_cast<uint16_t>(h));
    const float next = kldiv::HalfToFloat(static_cast<uint16_t>(h + 1));
    const float mid = f + (next - f) / 2;  // a tie: rounds to the even one
    for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, kInf), f}) {
      check_half(v);
      check_half(-v);
    }
  }
  Check(bad == 0, "float32 -> float16 round to nearest even");
  // bfloat16: reference by distances in double, ties to even.
  bad = 0;
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t b = gen();
    float f;
    std::memcpy(&f, &b, 4);
    const uint16_t got = kldiv::FloatToBFloat16(f);
    if (std::isnan(f)) {
      if (!std::isnan(kldiv::BFloat16ToFloat(got))) ++bad;
      continue;
    }
    const uint16_t lo = static_cast<uint16_t>(b >> 16);
    const uint16_t hi = static_cast<uint16_t>(lo + 1);
    const double dlo = std::fabs(static_cast<double>(kldiv::BFloat16ToFloat(lo)) - f);
    const double dhi = (hi & 0x7F80u) == 0x7F80u && (lo & 0x7F80u) != 0x7F80u
                           ? std::fabs(3.4028236692093846346e38 - std::fabs(static_cast<double>(f)))
                           : std::fabs(static_cast<double>(kldiv::BFloat16ToFloat(hi)) - f);
    const uint16_t want = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1u) ? hi : lo);
    if (got != want) {
      if (bad < 3) std::printf("  FloatToBFloat16(%.9g) = %04x want %04x\n", f, got, want);
      ++bad;
    }
  }
  Check(bad == 0, "float32 -> bfloat16 round to nearest even");
  // double -> float16 / bfloat16 in one rounding (a reduction's result), near ties especially.
  bad = 0;
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  for (int i = 0; i < 1000000; ++i) {
    const uint16_t h = static_cast<uint16_t>(gen() & 0x7BFFu);  // finite halves
    const double lo = kldiv::HalfToFloat(h);
    const double hi = kldiv::HalfToFloat(static_cast<uint16_t>(h + 1));
    const double mid = (lo + hi) / 2;
    const double d = mid + unit(gen) * (hi - lo) * (i % 2 ? 1e-9 : 0.5);
    const Half r = static_cast<Half>(d);  // libgcc: one correct rounding
    uint16_t want;
    std::memcpy(&want, &r, 2);
    if (kldiv::DoubleToHalf(d) != want) {
      if (bad < 3)
        std::printf("  DoubleToHalf(%.17g) = %04x want %04x\n", d, kldiv::DoubleToHalf(d), want);
      ++bad;
    }
    // bfloat16: nearest of the two neighbours, ties to even
    const uint16_t b = static_cast<uint16_t>(gen() & 0x7F7Eu);
    const double blo = kldiv::BFloat16ToFloat(b);
    const double bhi = kldiv::BFloat16ToFloat(static_cast<uint16_t>(b + 1));
    const double bd = (blo + bhi) / 2 + unit(gen) * (bhi - blo) * (i % 2 ? 1e-12 : 0.5);
    const double dl = std::fabs(bd - blo), dh = std::fabs(bhi - bd);
    const uint16_t bwant = dl < dh   ? b
                           : dh < dl ? static_cast<uint16_t>(b + 1)
                                     : ((b & 1u) ? static_cast<uint16_t>(b + 1) : b);
    if (kldiv::DoubleToBFloat16(bd) != bwant) ++bad;
  }
  Check(bad == 0, "double -> float16 / bfloat16 rounded once");
}

}  // namespace kldiv_test
