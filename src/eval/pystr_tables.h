// Unicode tables behind mor::eval::py, generated from CPython (tools/gen_pystr_tables.py).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mor::eval::py::tables {

// c in [first, last] with (c - first) % stride == 0 maps to c + delta; runs never overlap.
struct CaseRun {
  char32_t first;
  char32_t last;
  int32_t delta;
  uint8_t stride;
};
// A mapping to two or three code points (unused tail is 0).
struct CaseSpecial {
  char32_t cp;
  char32_t to[3];
};
struct Range {
  char32_t first;
  char32_t last;
};
// Decimal digits: first..last have the values first_value, first_value + 1, ...
struct DecimalRange {
  char32_t first;
  char32_t last;
  uint8_t first_value;
};

extern const CaseRun kLowerRuns[], kUpperRuns[], kTitleRuns[];
extern const size_t kLowerRunsSize, kUpperRunsSize, kTitleRunsSize;
extern const CaseSpecial kLowerSpecial[], kUpperSpecial[], kTitleSpecial[];
extern const size_t kLowerSpecialSize, kUpperSpecialSize, kTitleSpecialSize;
extern const Range kSpace[], kDigit[], kAlpha[], kPrintable[], kCased[], kCaseIgnorable[];
extern const size_t kSpaceSize, kDigitSize, kAlphaSize, kPrintableSize, kCasedSize, kCaseIgnorableSize;
extern const DecimalRange kDecimal[];
extern const size_t kDecimalSize;

}  // namespace mor::eval::py::tables
