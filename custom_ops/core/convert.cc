// convert.cc: scalar float16 / bfloat16 <-> float32 conversions (round to nearest even, NaN
// stays NaN) and the single rounding of a reduction's double result to a 16-bit dtype.
#include <cmath>
#include <cstring>

#include "kldiv_core.h"

namespace kldiv {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;
  uint32_t bits;
  if (em >= 0x7C00u) {
    bits = 0x7F800000u | (em & 0x3FFu) << 13;  // inf or NaN (payload kept)
  } else if (em >= 0x0400u) {
    bits = (em << 13) + ((127u - 15u) << 23);  // normal
  } else {
    const float v = static_cast<float>(em) * 5.9604644775390625e-8f;  // subnormal: em * 2**-24
    std::memcpy(&bits, &v, sizeof(bits));
  }
  bits |= sign;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520
  if (abs >= 0x38800000u) {                                              // normal half
    const uint32_t rounded = abs + 0xFFFu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - ((127u - 15u) << 23)) >> 13));
  }
  // Subnormal half (or zero): value = m * 2**-24 with m rounded to nearest even.
  float a;
  std::memcpy(&a, &abs, sizeof(a));
  const float scaled = a * 16777216.0f;    // exact: a power of two
  const float m = std::nearbyint(scaled);  // default rounding mode: nearest even
  return static_cast<uint16_t>(sign | static_cast<uint16_t>(m));
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

namespace {

// double -> float rounded to odd (inexact results get their last bit set): a later rounding to
// nearest even of that float to a format with at most 22 bits of precision then equals a
// single rounding of the double.
float RoundToOddFloat(double d) {
  float f = static_cast<float>(d);
  if (std::isnan(d) || static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits |= 1u;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace

uint16_t DoubleToHalf(double d) { return FloatToHalf(RoundToOddFloat(d)); }
uint16_t DoubleToBFloat16(double d) { return FloatToBFloat16(RoundToOddFloat(d)); }

}  // namespace kldiv
