// re.sub with Python `re` semantics on PCRE2 (mor/eval/pystr.h): pattern translation, the
// replacement template (\1 \g<name> escapes) and Python 3.7+ empty-match rules.
#include "mor/eval/pystr.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "mor/core/error.h"
#include "pystr_tables.h"

namespace mor::eval::py {

namespace {

bool is_d(char c) { return c >= '0' && c <= '9'; }

void append_utf8(std::string& out, char32_t c) { out += encode_utf8(std::u32string_view(&c, 1)); }

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
using CodePtr = std::shared_ptr<pcre2_code>;

// The members of Python's \s (str.isspace()) as the body of a PCRE2 class; PCRE2's own \s
// differs on U+001C..U+001F and U+180E.
const std::string& space_class_body() {
  static const std::string body = [] {
    std::string b;
    char buf[40];
    for (size_t k = 0; k < tables::kSpaceSize; ++k) {
      const tables::Range& r = tables::kSpace[k];
      if (r.first == r.last)
        std::snprintf(buf, sizeof buf, "\\x{%X}", static_cast<unsigned>(r.first));
      else
        std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", static_cast<unsigned>(r.first), static_cast<unsigned>(r.last));
      b += buf;
    }
    return b;
  }();
  return body;
}

// Python-only pattern syntax rewritten for PCRE2: \Z (absolute end) -> \z, \uXXXX / \UXXXXXXXX ->
// \x{...}, \s / \S -> Python's whitespace set (\S inside a [...] class keeps PCRE2's meaning).
std::string translate_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size());
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c != '\\' || i + 1 >= p.size()) {
      if (!in_class && c == '[') {
        in_class = true;
        out += c;
        if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
        if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
        continue;
      }
      if (in_class && c == ']') in_class = false;
      out += c;
      continue;
    }
    char e = p[i + 1];
    size_t hex = e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (e == 'Z') {
      out += "\\z";
      ++i;
    } else if (e == 's') {
      out += in_class ? space_class_body() : "[" + space_class_body() + "]";
      ++i;
    } else if (e == 'S' && !in_class) {
      out += "[^" + space_class_body() + "]";
      ++i;
    } else if (hex && i + 2 + hex <= p.size() &&
               std::all_of(p.begin() + i + 2, p.begin() + i + 2 + hex,
                           [](char ch) { return std::isxdigit(static_cast<unsigned char>(ch)); })) {
      out += "\\x{";
      out.append(p.substr(i + 2, hex));
      out += '}';
      i += 1 + hex;
    } else {
      out += c;
      out += e;
      ++i;
    }
  }
  return out;
}

CodePtr compile_pattern(std::string_view pattern) {
  thread_local std::unordered_map<std::string, CodePtr> cache;
  std::string key(pattern);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  std::string translated = translate_pattern(pattern);
  pcre2_compile_context* ctx = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(ctx, PCRE2_NEWLINE_LF);
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_off, ctx);
  pcre2_compile_context_free(ctx);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    fail("bad regular expression '", pattern, "': ", reinterpret_cast<const char*>(buf), " at offset ", err_off);
  }
  CodePtr ptr(code, CodeDeleter{});
  if (cache.size() >= 64) cache.clear();
  cache.emplace(std::move(key), ptr);
  return ptr;
}

// One piece of a parsed replacement: literal text, or a group reference (group >= 0).
struct ReplPiece {
  std::string text;
  int group = -1;
};

bool is_octal(char c) { return c >= '0' && c <= '7'; }

std::vector<ReplPiece> parse_repl(std::string_view repl, pcre2_code* code) {
  uint32_t groups = 0;
  pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &groups);
  std::vector<ReplPiece> pieces(1);
  auto add_group = [&](int64_t g) {
    MOR_CHECK(g >= 0 && g <= static_cast<int64_t>(groups), "invalid group reference ", g);
    pieces.push_back({"", static_cast<int>(g)});
    pieces.emplace_back();
  };
  for (size_t i = 0; i < repl.size(); ++i) {
    char c = repl[i];
    if (c != '\\') {
      pieces.back().text += c;
      continue;
    }
    MOR_CHECK(i + 1 < repl.size(), "bad escape (end of pattern) in replacement");
    char e = repl[++i];
    if (e == 'g') {
      size_t close = repl.find('>', i);
      MOR_CHECK(i + 1 < repl.size() && repl[i + 1] == '<' && close != std::string_view::npos,
                "missing group name in replacement \\g<...>");
      std::string name(repl.substr(i + 2, close - i - 2));
      i = close;
      MOR_CHECK(!name.empty(), "missing group name in replacement \\g<...>");
      if (std::all_of(name.begin(), name.end(), [](char ch) { return is_d(ch); })) {
        MOR_CHECK(name.size() < 10, "invalid group reference ", name);
        add_group(std::stoll(name));
      } else {
        int n = pcre2_substring_number_from_name(code, reinterpret_cast<PCRE2_SPTR>(name.c_str()));
        MOR_CHECK(n >= 0, "unknown group name '", name, "' in replacement");
        add_group(n);
      }
    } else if (e == '0') {
      int v = 0;
      size_t k = 0;
      while (k < 2 && i + 1 < repl.size() && is_octal(repl[i + 1])) v = v * 8 + (repl[++i] - '0'), ++k;
      append_utf8(pieces.back().text, static_cast<char32_t>(v));
    } else if (is_d(e)) {
      if (i + 1 < repl.size() && is_d(repl[i + 1])) {
        char d2 = repl[i + 1];
        if (is_octal(e) && is_octal(d2) && i + 2 < repl.size() && is_octal(repl[i + 2])) {
          int v = (e - '0') * 64 + (d2 - '0') * 8 + (repl[i + 2] - '0');
          MOR_CHECK(v <= 0377, "octal escape value out of range in replacement");
          append_utf8(pieces.back().text, static_cast<char32_t>(v));
          i += 2;
          continue;
        }
        add_group((e - '0') * 10 + (d2 - '0'));
        ++i;
      } else {
        add_group(e - '0');
      }
    } else {
      static const char kFrom[] = "abfnrtv\\";
      static const char kTo[] = "\a\b\f\n\r\t\v\\";
      const char* p = std::strchr(kFrom, e);
      if (p && *p) {
        pieces.back().text += kTo[p - kFrom];
      } else {
        MOR_CHECK(!std::isalpha(static_cast<unsigned char>(e)), "bad escape \\", e, " in replacement");
        pieces.back().text += '\\';
        pieces.back().text += e;
      }
    }
  }
  return pieces;
}

}  // namespace

std::string re_sub(std::string_view pattern, std::string_view repl, std::string_view s, int64_t count) {
  CodePtr code = compile_pattern(pattern);
  std::vector<ReplPiece> pieces = parse_repl(repl, code.get());
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
      pcre2_match_data_create_from_pattern(code.get(), nullptr), pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  std::string out;
  size_t last = 0;
  size_t pos = 0;
  uint32_t options = 0;
  int64_t n = 0;
  while (count <= 0 || n < count) {
    int rc = pcre2_match(code.get(), subject, s.size(), pos, options, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(rc, buf, sizeof buf);
      fail("regular expression '", pattern, "': ", reinterpret_cast<const char*>(buf));
    }
    options = PCRE2_NO_UTF_CHECK;
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    uint32_t pairs = pcre2_get_ovector_count(md.get());
    out.append(s.substr(last, ov[0] - last));
    for (const ReplPiece& p : pieces) {
      if (p.group < 0) {
        out += p.text;
      } else if (static_cast<uint32_t>(p.group) < pairs && ov[2 * p.group] != PCRE2_UNSET) {
        out.append(s.substr(ov[2 * p.group], ov[2 * p.group + 1] - ov[2 * p.group]));
      }
    }
    last = ov[1];
    pos = ov[1];
    if (ov[0] == ov[1]) options |= PCRE2_NOTEMPTY_ATSTART;
    ++n;
  }
  out.append(s.substr(last));
  return out;
}

}  // namespace mor::eval::py
