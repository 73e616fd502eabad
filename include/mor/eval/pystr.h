// Python 3.11 `str` semantics on UTF-8 text, for building prompts exactly as lm-evaluation-harness
// (Python + Jinja2) builds them. Indices, lengths and slices count code points, not bytes.
// Whitespace is Python's str.isspace() set; case mapping is CPython's full Unicode mapping
// (str.lower/upper/capitalize, incl. final sigma in lower), generated from Python's own tables.
// Invalid UTF-8 is a mor::Error naming `where` when given (callers pass file:line of the doc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mor::eval::py {

std::u32string decode_utf8(std::string_view s);  // throws mor::Error on invalid UTF-8
std::string encode_utf8(std::u32string_view s);

bool isspace(char32_t c);              // str.isspace() for one code point
int64_t len(std::string_view s);       // len(s): code points

std::string strip(std::string_view s);                          // s.strip()
std::string lstrip(std::string_view s);
std::string rstrip(std::string_view s);
std::string strip(std::string_view s, std::string_view chars);  // s.strip(chars)
std::string lstrip(std::string_view s, std::string_view chars);
std::string rstrip(std::string_view s, std::string_view chars);

// s.split(sep, maxsplit); an empty sep is a mor::Error ("empty separator") as in Python.
std::vector<std::string> split(std::string_view s, std::string_view sep, int64_t maxsplit = -1);
// s.split(None, maxsplit): runs of whitespace, no empty strings.
std::vector<std::string> split_whitespace(std::string_view s, int64_t maxsplit = -1);
std::string join(std::string_view sep, const std::vector<std::string>& parts);
std::string replace(std::string_view s, std::string_view old, std::string_view replacement, int64_t count = -1);

std::string lower(std::string_view s);
std::string upper(std::string_view s);
std::string capitalize(std::string_view s);  // first code point title-cased, the rest lower-cased
std::string title(std::string_view s);

bool startswith(std::string_view s, std::string_view prefix);
bool endswith(std::string_view s, std::string_view suffix);
// s.find(sub): code-point index or -1. index() is find() that throws mor::Error
// ("substring not found") like Python's ValueError.
int64_t find(std::string_view s, std::string_view sub);
int64_t index(std::string_view s, std::string_view sub);
int64_t count(std::string_view s, std::string_view sub);
bool isdigit(std::string_view s);  // non-empty and every code point a (Unicode) decimal/digit
bool isalpha(std::string_view s);

// s[i] (negative from the end; out of range -> mor::Error "string index out of range") and
// s[start:stop:step] with Python's clamping rules (step != 0).
std::string at(std::string_view s, int64_t i);
std::string slice(std::string_view s, std::optional<int64_t> start, std::optional<int64_t> stop,
                  int64_t step = 1);

// The indices s[start:stop:step] selects in a sequence of `length` items (Python's slice.indices
// rules): first, first + step, ... `count` of them. step != 0.
struct SliceRange {
  int64_t first;
  int64_t step;
  int64_t count;
};
SliceRange adjust_slice(int64_t length, std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step);

// list(s): one string per code point.
std::vector<std::string> chars(std::string_view s);

// int(s) / float(s) of a str: surrounding whitespace, a sign, Unicode decimal digits and single '_'
// between digits; std::nullopt where Python raises ValueError. An int beyond int64 is a mor::Error.
std::optional<int64_t> to_int(std::string_view s);
std::optional<double> to_float(std::string_view s);

// re.sub(pattern, repl, s) with Python `re` semantics for the supported subset: PCRE2 in UTF mode,
// '.' not matching '\n', non-greedy quantifiers, classes, groups; `repl` may use \1..\9 and \g<n>
// group references and the escapes \n \t \\. count = 0: all matches. A bad pattern is a mor::Error.
std::string re_sub(std::string_view pattern, std::string_view repl, std::string_view s, int64_t count = 0);

// repr(s) as Python prints it: single quotes unless the text contains ' and no ", escapes for
// \\, the chosen quote, \n \r \t and other non-printable code points (\xNN, \uNNNN, \UNNNNNNNN).
std::string repr(std::string_view s);

}  // namespace mor::eval::py
