// Python 3.11 str semantics on UTF-8 text (mor/eval/pystr.h); Unicode data from pystr_tables.cpp.
#include "mor/eval/pystr.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "mor/core/error.h"
#include "pystr_tables.h"

namespace mor::eval::py {

namespace {

namespace t = tables;

bool is_ascii(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w & 0x8080808080808080ull) return false;
  }
  for (; i < n; ++i)
    if (static_cast<unsigned char>(p[i]) & 0x80) return false;
  return true;
}

[[noreturn]] void invalid_utf8(size_t at) { fail("invalid UTF-8 at byte ", at); }

// Decodes the code point starting at s[i] and advances i; invalid UTF-8 is a mor::Error.
char32_t next_cp(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  unsigned char b0 = p[i];
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  size_t len;
  char32_t c;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    c = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    c = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    c = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    invalid_utf8(i);
  }
  if (i + len > n) invalid_utf8(i);
  for (size_t k = 1; k < len; ++k) {
    unsigned char b = p[i + k];
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) invalid_utf8(i);
    c = (c << 6) | (b & 0x3F);
  }
  i += len;
  return c;
}

// Decodes the code point ending at s[i - 1] and moves i to its start.
char32_t prev_cp(std::string_view s, size_t& i) {
  size_t start = i - 1;
  while (start > 0 && i - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t j = start;
  char32_t c = next_cp(s, j);
  if (j != i) invalid_utf8(start);
  i = start;
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

bool in_ranges(const t::Range* r, size_t n, char32_t c) {
  const t::Range* end = r + n;
  const t::Range* it = std::upper_bound(r, end, c, [](char32_t v, const t::Range& x) { return v < x.first; });
  return it != r && c <= (it - 1)->last;
}

bool is_cased(char32_t c) { return in_ranges(t::kCased, t::kCasedSize, c); }
bool is_case_ignorable(char32_t c) { return in_ranges(t::kCaseIgnorable, t::kCaseIgnorableSize, c); }

struct CaseTable {
  const t::CaseRun* runs;
  size_t runs_size;
  const t::CaseSpecial* special;
  size_t special_size;
};
const CaseTable kLowerTable{t::kLowerRuns, t::kLowerRunsSize, t::kLowerSpecial, t::kLowerSpecialSize};
const CaseTable kUpperTable{t::kUpperRuns, t::kUpperRunsSize, t::kUpperSpecial, t::kUpperSpecialSize};
const CaseTable kTitleTable{t::kTitleRuns, t::kTitleRunsSize, t::kTitleSpecial, t::kTitleSpecialSize};

void append_mapped(std::string& out, char32_t c, const CaseTable& table) {
  const t::CaseSpecial* send = table.special + table.special_size;
  const t::CaseSpecial* sp =
      std::lower_bound(table.special, send, c, [](const t::CaseSpecial& x, char32_t v) { return x.cp < v; });
  if (sp != send && sp->cp == c) {
    for (char32_t m : sp->to)
      if (m) append_utf8(out, m);
    return;
  }
  const t::CaseRun* rend = table.runs + table.runs_size;
  const t::CaseRun* it =
      std::upper_bound(table.runs, rend, c, [](char32_t v, const t::CaseRun& x) { return v < x.first; });
  if (it != table.runs) {
    const t::CaseRun& r = *(it - 1);
    if (c <= r.last && (c - r.first) % r.stride == 0) {
      append_utf8(out, static_cast<char32_t>(static_cast<int64_t>(c) + r.delta));
      return;
    }
  }
  append_utf8(out, c);
}

// CPython's lower_ucs4: the full lowercase mapping, with U+03A3 becoming final sigma at a word end.
void append_lower_at(std::string& out, const std::u32string& cps, size_t i) {
  char32_t c = cps[i];
  if (c != 0x3A3) {
    append_mapped(out, c, kLowerTable);
    return;
  }
  size_t n = cps.size();
  size_t j = i;
  while (j > 0 && is_case_ignorable(cps[j - 1])) --j;
  bool final_sigma = j > 0 && is_cased(cps[j - 1]);
  if (final_sigma) {
    size_t k = i + 1;
    while (k < n && is_case_ignorable(cps[k])) ++k;
    final_sigma = k == n || !is_cased(cps[k]);
  }
  append_utf8(out, final_sigma ? 0x3C2 : 0x3C3);
}

bool in_set(char32_t c, const std::u32string& set) { return set.find(c) != std::u32string::npos; }

int64_t cp_count(std::string_view s) {
  int64_t n = 0;
  for (unsigned char b : s) n += (b & 0xC0) != 0x80;
  return n;
}

void validate(std::string_view s) {
  if (is_ascii(s)) return;
  for (size_t i = 0; i < s.size();) next_cp(s, i);
}

}  // namespace

std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out += next_cp(s, i);
  return out;
}

std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    MOR_CHECK(c < 0x110000 && (c < 0xD800 || c > 0xDFFF), "invalid code point U+", std::hex,
              static_cast<uint32_t>(c));
    append_utf8(out, c);
  }
  return out;
}

bool isspace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  return in_ranges(t::kSpace, t::kSpaceSize, c);
}

int64_t len(std::string_view s) {
  validate(s);
  return cp_count(s);
}

std::string strip(std::string_view s) { return lstrip(rstrip(s)); }

std::string lstrip(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!isspace(next_cp(s, j))) break;
    i = j;
  }
  return std::string(s.substr(i));
}

std::string rstrip(std::string_view s) {
  size_t i = s.size();
  while (i > 0) {
    size_t j = i;
    if (!isspace(prev_cp(s, j))) break;
    i = j;
  }
  return std::string(s.substr(0, i));
}

std::string strip(std::string_view s, std::string_view chars) { return lstrip(rstrip(s, chars), chars); }

std::string lstrip(std::string_view s, std::string_view chars) {
  std::u32string set = decode_utf8(chars);
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!in_set(next_cp(s, j), set)) break;
    i = j;
  }
  return std::string(s.substr(i));
}

std::string rstrip(std::string_view s, std::string_view chars) {
  std::u32string set = decode_utf8(chars);
  size_t i = s.size();
  while (i > 0) {
    size_t j = i;
    if (!in_set(prev_cp(s, j), set)) break;
    i = j;
  }
  return std::string(s.substr(0, i));
}

std::vector<std::string> split(std::string_view s, std::string_view sep, int64_t maxsplit) {
  MOR_CHECK(!sep.empty(), "empty separator");
  std::vector<std::string> out;
  if (maxsplit < 0) maxsplit = std::numeric_limits<int64_t>::max();
  size_t i = 0;
  while (maxsplit-- > 0) {
    size_t pos = s.find(sep, i);
    if (pos == std::string_view::npos) break;
    out.emplace_back(s.substr(i, pos - i));
    i = pos + sep.size();
  }
  out.emplace_back(s.substr(i));
  return out;
}

std::vector<std::string> split_whitespace(std::string_view s, int64_t maxsplit) {
  std::vector<std::string> out;
  if (maxsplit < 0) maxsplit = std::numeric_limits<int64_t>::max();
  size_t n = s.size();
  size_t i = 0;
  auto skip_space = [&] {
    while (i < n) {
      size_t j = i;
      if (!isspace(next_cp(s, j))) break;
      i = j;
    }
  };
  while (maxsplit-- > 0) {
    skip_space();
    if (i == n) break;
    size_t start = i;
    while (i < n) {
      size_t j = i;
      if (isspace(next_cp(s, j))) break;
      i = j;
    }
    out.emplace_back(s.substr(start, i - start));
  }
  if (i < n) {
    skip_space();
    if (i < n) out.emplace_back(s.substr(i));
  }
  return out;
}

std::string join(std::string_view sep, const std::vector<std::string>& parts) {
  std::string out;
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k) out += sep;
    out += parts[k];
  }
  return out;
}

std::string replace(std::string_view s, std::string_view old, std::string_view replacement, int64_t count) {
  if (count < 0) count = std::numeric_limits<int64_t>::max();
  std::string out;
  if (old.empty()) {
    size_t i = 0;
    while (count > 0 && i <= s.size()) {
      out += replacement;
      --count;
      if (i == s.size()) {
        i = s.size() + 1;
        break;
      }
      size_t j = i;
      next_cp(s, j);
      out.append(s.substr(i, j - i));
      i = j;
    }
    if (i <= s.size()) out.append(s.substr(i));
    return out;
  }
  size_t i = 0;
  while (count-- > 0) {
    size_t pos = s.find(old, i);
    if (pos == std::string_view::npos) break;
    out.append(s.substr(i, pos - i));
    out += replacement;
    i = pos + old.size();
  }
  out.append(s.substr(i));
  return out;
}

std::string lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  if (is_ascii(s)) {
    for (char ch : s) out += (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch + 32) : ch;
    return out;
  }
  std::u32string cps = decode_utf8(s);
  for (size_t i = 0; i < cps.size(); ++i) append_lower_at(out, cps, i);
  return out;
}

std::string upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  if (is_ascii(s)) {
    for (char ch : s) out += (ch >= 'a' && ch <= 'z') ? static_cast<char>(ch - 32) : ch;
    return out;
  }
  for (size_t i = 0; i < s.size();) append_mapped(out, next_cp(s, i), kUpperTable);
  return out;
}

std::string capitalize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  if (s.empty()) return out;
  if (is_ascii(s)) {
    out = lower(s);
    if (out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
    return out;
  }
  std::u32string cps = decode_utf8(s);
  append_mapped(out, cps[0], kTitleTable);
  for (size_t i = 1; i < cps.size(); ++i) append_lower_at(out, cps, i);
  return out;
}

std::string title(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::u32string cps = decode_utf8(s);
  bool previous_cased = false;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (previous_cased)
      append_lower_at(out, cps, i);
    else
      append_mapped(out, cps[i], kTitleTable);
    previous_cased = is_cased(cps[i]);
  }
  return out;
}

bool startswith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool endswith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

int64_t find(std::string_view s, std::string_view sub) {
  validate(s);
  size_t pos = s.find(sub);
  if (pos == std::string_view::npos) return -1;
  return cp_count(s.substr(0, pos));
}

int64_t index(std::string_view s, std::string_view sub) {
  int64_t i = find(s, sub);
  MOR_CHECK(i >= 0, "substring not found");
  return i;
}

int64_t count(std::string_view s, std::string_view sub) {
  validate(s);
  if (sub.empty()) return cp_count(s) + 1;
  int64_t n = 0;
  for (size_t pos = s.find(sub); pos != std::string_view::npos; pos = s.find(sub, pos + sub.size())) ++n;
  return n;
}

bool isdigit(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();)
    if (!in_ranges(t::kDigit, t::kDigitSize, next_cp(s, i))) return false;
  return true;
}

bool isalpha(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();)
    if (!in_ranges(t::kAlpha, t::kAlphaSize, next_cp(s, i))) return false;
  return true;
}

SliceRange adjust_slice(int64_t length, std::optional<int64_t> start_in, std::optional<int64_t> stop_in,
                        int64_t step) {
  MOR_CHECK(step != 0, "slice step cannot be zero");
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (step < -kMax) step = -kMax;
  int64_t start = start_in ? *start_in : (step < 0 ? kMax : 0);
  int64_t stop = stop_in ? *stop_in : (step < 0 ? -kMax - 1 : kMax);
  auto clamp = [&](int64_t& v) {
    if (v < 0) {
      v += length;
      if (v < 0) v = step < 0 ? -1 : 0;
    } else if (v >= length) {
      v = step < 0 ? length - 1 : length;
    }
  };
  clamp(start);
  clamp(stop);
  int64_t count = 0;
  if (step < 0) {
    if (stop < start) count = (start - stop - 1) / (-step) + 1;
  } else if (start < stop) {
    count = (stop - start - 1) / step + 1;
  }
  return {start, step, count};
}

std::string at(std::string_view s, int64_t i) {
  if (is_ascii(s)) {
    int64_t n = static_cast<int64_t>(s.size());
    if (i < 0) i += n;
    MOR_CHECK(i >= 0 && i < n, "string index out of range");
    return std::string(1, s[static_cast<size_t>(i)]);
  }
  std::u32string cps = decode_utf8(s);
  int64_t n = static_cast<int64_t>(cps.size());
  if (i < 0) i += n;
  MOR_CHECK(i >= 0 && i < n, "string index out of range");
  std::string out;
  append_utf8(out, cps[static_cast<size_t>(i)]);
  return out;
}

std::string slice(std::string_view s, std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step) {
  std::string out;
  if (is_ascii(s)) {
    SliceRange r = adjust_slice(static_cast<int64_t>(s.size()), start, stop, step);
    if (r.step == 1) return std::string(s.substr(static_cast<size_t>(r.first), static_cast<size_t>(r.count)));
    out.reserve(static_cast<size_t>(r.count));
    for (int64_t k = 0, i = r.first; k < r.count; ++k, i += r.step) out += s[static_cast<size_t>(i)];
    return out;
  }
  std::u32string cps = decode_utf8(s);
  SliceRange r = adjust_slice(static_cast<int64_t>(cps.size()), start, stop, step);
  for (int64_t k = 0, i = r.first; k < r.count; ++k, i += r.step) append_utf8(out, cps[static_cast<size_t>(i)]);
  return out;
}

std::vector<std::string> chars(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t j = i;
    next_cp(s, j);
    out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

namespace {

// Python's _PyUnicode_TransformDecimalAndSpaceToASCII plus strip(): decimal digits become ASCII,
// whitespace ' ', anything else non-ASCII '?'.
std::string numeric_ascii(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t c = next_cp(s, i);
    if (c < 0x80) {
      out += static_cast<char>(c);
      continue;
    }
    if (isspace(c)) {
      out += ' ';
      continue;
    }
    const t::DecimalRange* end = t::kDecimal + t::kDecimalSize;
    const t::DecimalRange* it = std::upper_bound(t::kDecimal, end, c,
                                                 [](char32_t v, const t::DecimalRange& x) { return v < x.first; });
    if (it != t::kDecimal && c <= (it - 1)->last)
      out += static_cast<char>('0' + (it - 1)->first_value + (c - (it - 1)->first));
    else
      out += '?';
  }
  size_t b = out.find_first_not_of(" \t\n\v\f\r\x1c\x1d\x1e\x1f");
  if (b == std::string::npos) return {};
  size_t e = out.find_last_not_of(" \t\n\v\f\r\x1c\x1d\x1e\x1f");
  return out.substr(b, e - b + 1);
}

bool is_d(char c) { return c >= '0' && c <= '9'; }

// Digits with single underscores between them starting at s[i]; appends the digits to out.
bool take_digits(const std::string& s, size_t& i, std::string& out) {
  if (i >= s.size() || !is_d(s[i])) return false;
  while (i < s.size()) {
    if (is_d(s[i])) {
      out += s[i++];
    } else if (s[i] == '_' && i + 1 < s.size() && is_d(s[i + 1])) {
      ++i;
    } else {
      break;
    }
  }
  return true;
}

}  // namespace

std::optional<int64_t> to_int(std::string_view s) {
  std::string a = numeric_ascii(s);
  size_t i = 0;
  bool negative = false;
  if (i < a.size() && (a[i] == '+' || a[i] == '-')) negative = a[i++] == '-';
  std::string digits = negative ? "-" : "";
  if (!take_digits(a, i, digits) || i != a.size()) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  MOR_CHECK(ec == std::errc() && p == digits.data() + digits.size(), "integer out of range (beyond int64): ",
            digits);
  return v;
}

std::optional<double> to_float(std::string_view s) {
  std::string a = numeric_ascii(s);
  size_t i = 0;
  std::string clean;
  if (i < a.size() && (a[i] == '+' || a[i] == '-')) {
    if (a[i] == '-') clean += '-';
    ++i;
  }
  std::string rest = a.substr(i);
  std::string low;
  for (char ch : rest) low += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (low == "inf" || low == "infinity" || low == "nan") {
    double v = low == "nan" ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    return clean.empty() ? v : -v;
  }
  bool int_part = take_digits(a, i, clean);
  bool frac_part = false;
  if (i < a.size() && a[i] == '.') {
    clean += a[i++];
    frac_part = take_digits(a, i, clean);
  }
  if (!int_part && !frac_part) return std::nullopt;
  if (i < a.size() && (a[i] == 'e' || a[i] == 'E')) {
    clean += a[i++];
    if (i < a.size() && (a[i] == '+' || a[i] == '-')) clean += a[i++];
    if (!take_digits(a, i, clean)) return std::nullopt;
  }
  if (i != a.size()) return std::nullopt;
  double v = 0;
  auto [p, ec] = std::from_chars(clean.data(), clean.data() + clean.size(), v);
  if (ec == std::errc::result_out_of_range) return std::strtod(clean.c_str(), nullptr);
  if (ec != std::errc()) return std::nullopt;
  (void)p;
  return v;
}

std::string repr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size();) {
    char32_t c = next_cp(s, i);
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else if (c < 0x7F || in_ranges(t::kPrintable, t::kPrintableSize, c)) {
      append_utf8(out, c);
    } else {
      int digits = c < 0x100 ? 2 : c < 0x10000 ? 4 : 8;
      out += '\\';
      out += digits == 2 ? 'x' : digits == 4 ? 'u' : 'U';
      for (int k = digits - 1; k >= 0; --k) out += kHex[(c >> (4 * k)) & 15];
    }
  }
  out += quote;
  return out;
}

}  // namespace mor::eval::py
