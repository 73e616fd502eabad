// mor::eval::py against CPython 3.11: every case of tests/fixtures/eval/text_golden.json (written by
// tools/gen_pystr_golden.py), plus UTF-8 validation and slice rules checked by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "error_testing.h"
#include "mor/eval/pystr.h"
#include "mor/eval/template.h"

namespace py = mor::eval::py;
using nlohmann::json;
using mor::testing::error_of;
using mor::testing::expect_error;
using mor::testing::kNoError;

namespace {

const json& golden() {
  static const json data = [] {
    std::ifstream in(std::string(MOR_SOURCE_DIR) + "/tests/fixtures/eval/text_golden.json");
    EXPECT_TRUE(in.good()) << "missing tests/fixtures/eval/text_golden.json";
    return json::parse(in);
  }();
  return data;
}

json to_json(const std::vector<std::string>& v) { return json(v); }

std::optional<int64_t> opt_int(const json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<int64_t>();
}

// Runs one golden operation; the result as JSON (a mor::Error propagates).
json run_op(const std::string& op, const json& a) {
  auto s = [&](size_t i) { return a.at(i).get<std::string>(); };
  if (op == "len") return py::len(s(0));
  if (op == "strip") return a.size() > 1 && !a[1].is_null() ? py::strip(s(0), s(1)) : py::strip(s(0));
  if (op == "lstrip") return a.size() > 1 && !a[1].is_null() ? py::lstrip(s(0), s(1)) : py::lstrip(s(0));
  if (op == "rstrip") return a.size() > 1 && !a[1].is_null() ? py::rstrip(s(0), s(1)) : py::rstrip(s(0));
  if (op == "lower") return py::lower(s(0));
  if (op == "upper") return py::upper(s(0));
  if (op == "capitalize") return py::capitalize(s(0));
  if (op == "title") return py::title(s(0));
  if (op == "isdigit") return py::isdigit(s(0));
  if (op == "isalpha") return py::isalpha(s(0));
  if (op == "split") return to_json(py::split(s(0), s(1), a.at(2).get<int64_t>()));
  if (op == "split_whitespace") return to_json(py::split_whitespace(s(0), a.at(1).get<int64_t>()));
  if (op == "replace") return py::replace(s(0), s(1), s(2), a.at(3).get<int64_t>());
  if (op == "find") return py::find(s(0), s(1));
  if (op == "index") return py::index(s(0), s(1));
  if (op == "count") return py::count(s(0), s(1));
  if (op == "startswith") return py::startswith(s(0), s(1));
  if (op == "endswith") return py::endswith(s(0), s(1));
  if (op == "at") return py::at(s(0), a.at(1).get<int64_t>());
  if (op == "slice") return py::slice(s(0), opt_int(a.at(1)), opt_int(a.at(2)), a.at(3).get<int64_t>());
  if (op == "re_sub") return py::re_sub(s(0), s(1), s(2), a.at(3).get<int64_t>());
  if (op == "repr") return py::repr(s(0));
  if (op == "chars") return to_json(py::chars(s(0)));
  if (op == "to_int") {
    std::optional<int64_t> v;
    try {
      v = py::to_int(s(0));
    } catch (const mor::Error&) {
      return "beyond int64";
    }
    return v ? json(*v) : json(nullptr);
  }
  if (op == "to_float") {
    std::optional<double> v = py::to_float(s(0));
    if (!v) return nullptr;
    return mor::eval::py_str(json(*v));
  }
  if (op == "float_repr") return mor::eval::py_str(json(std::strtod(s(0).c_str(), nullptr)));
  if (op == "isspace_cps") {
    json out = json::array();
    for (int64_t c = a.at(0).get<int64_t>(); c < a.at(1).get<int64_t>(); ++c)
      if (py::isspace(static_cast<char32_t>(c))) out.push_back(c);
    return out;
  }
  ADD_FAILURE() << "unknown golden op " << op;
  return nullptr;
}

// Checks every golden case whose op is in `ops`; returns how many were checked.
int check_ops(const std::set<std::string>& ops) {
  int checked = 0;
  for (const json& c : golden().at("pystr")) {
    std::string op = c.at("op").get<std::string>();
    if (!ops.count(op)) continue;
    ++checked;
    SCOPED_TRACE(op + c.at("args").dump());
    if (c.contains("error")) {
      std::string msg = error_of([&] { run_op(op, c.at("args")); });
      EXPECT_NE(msg, kNoError) << "Python raised: " << c.at("error").get<std::string>();
      continue;
    }
    json got;
    std::string msg = error_of([&] { got = run_op(op, c.at("args")); });
    EXPECT_EQ(msg, kNoError);
    EXPECT_EQ(got.dump(), c.at("result").dump());
  }
  return checked;
}

}  // namespace

TEST(PyStrGolden, GeneratedByCPython311) {
  EXPECT_EQ(golden().at("python").get<std::string>().substr(0, 5), "3.11.");
  EXPECT_GT(golden().at("pystr").size(), 500u);
}

TEST(PyStrGolden, StripAndLen) { EXPECT_GT(check_ops({"strip", "lstrip", "rstrip", "len", "chars"}), 80); }

TEST(PyStrGolden, Split) { EXPECT_GT(check_ops({"split", "split_whitespace"}), 60); }

TEST(PyStrGolden, Replace) { EXPECT_GE(check_ops({"replace"}), 10); }

TEST(PyStrGolden, CaseMapping) { EXPECT_GT(check_ops({"lower", "upper", "capitalize", "title"}), 100); }

TEST(PyStrGolden, FindIndexCountAffixes) {
  EXPECT_GE(check_ops({"find", "index", "count", "startswith", "endswith"}), 45);
}

TEST(PyStrGolden, CharacterClasses) { EXPECT_GT(check_ops({"isdigit", "isalpha", "isspace_cps"}), 40); }

TEST(PyStrGolden, IndexingAndSlicing) { EXPECT_GT(check_ops({"at", "slice"}), 100); }

TEST(PyStrGolden, RegexSub) { EXPECT_GE(check_ops({"re_sub"}), 20); }

TEST(PyStrGolden, Repr) { EXPECT_GT(check_ops({"repr"}), 30); }

TEST(PyStrGolden, NumbersFromText) { EXPECT_GT(check_ops({"to_int", "to_float", "float_repr"}), 40); }

TEST(PyStrGolden, EveryCaseHasAKnownOp) {
  std::set<std::string> known = {"strip", "lstrip", "rstrip", "len", "chars", "split", "split_whitespace",
                                 "replace", "lower", "upper", "capitalize", "title", "find", "index", "count",
                                 "startswith", "endswith", "isdigit", "isalpha", "isspace_cps", "at", "slice",
                                 "re_sub", "repr", "to_int", "to_float", "float_repr"};
  for (const json& c : golden().at("pystr")) EXPECT_TRUE(known.count(c.at("op").get<std::string>())) << c.at("op");
}

TEST(PyStr, Utf8RoundTripAndValidation) {
  std::string s = "a\u00e9\u65e5\U0001F44B";
  std::u32string cps = py::decode_utf8(s);
  ASSERT_EQ(cps.size(), 4u);
  EXPECT_EQ(cps[3], U'\U0001F44B');
  EXPECT_EQ(py::encode_utf8(cps), s);
  for (const char* bad : {"\xff", "\xc0\x80", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ab\xe6\x97", "\x80"}) {
    SCOPED_TRACE(::testing::PrintToString(std::string(bad)));
    EXPECT_NE(expect_error([&] { py::decode_utf8(bad); }).find("invalid UTF-8"), std::string::npos);
    EXPECT_NE(error_of([&] { py::len(bad); }), kNoError);
    EXPECT_NE(error_of([&] { py::lower(std::string("x") + bad); }), kNoError);
  }
  EXPECT_NE(error_of([&] { py::encode_utf8(std::u32string(1, char32_t{0xD800})); }), kNoError);
  EXPECT_NE(error_of([&] { py::rstrip("ok\xe6\x97"); }), kNoError);
}

TEST(PyStr, PythonErrors) {
  EXPECT_NE(expect_error([] { py::split("a,b", ""); }).find("empty separator"), std::string::npos);
  EXPECT_NE(expect_error([] { py::index("abc", "z"); }).find("substring not found"), std::string::npos);
  EXPECT_NE(expect_error([] { py::at("h\u00e9", 2); }).find("string index out of range"), std::string::npos);
  EXPECT_NE(error_of([] { py::slice("abc", 0, 1, 0); }), kNoError);
  EXPECT_NE(expect_error([] { py::re_sub("(", "", "x"); }).find("("), std::string::npos);
  EXPECT_NE(error_of([] { py::re_sub("a", "\\2", "a"); }), kNoError);
  EXPECT_NE(error_of([] { py::to_int("99999999999999999999"); }), kNoError);
}

TEST(PyStr, AdjustSliceMatchesPythonIndices) {
  // range(10)[a:b:c] computed by hand.
  auto pick = [](std::optional<int64_t> a, std::optional<int64_t> b, int64_t c) {
    py::SliceRange r = py::adjust_slice(10, a, b, c);
    std::vector<int64_t> out;
    for (int64_t k = 0, i = r.first; k < r.count; ++k, i += r.step) out.push_back(i);
    return out;
  };
  EXPECT_EQ(pick(std::nullopt, std::nullopt, -3), (std::vector<int64_t>{9, 6, 3, 0}));
  EXPECT_EQ(pick(-2, std::nullopt, 1), (std::vector<int64_t>{8, 9}));
  EXPECT_EQ(pick(100, -100, -4), (std::vector<int64_t>{9, 5, 1}));
  EXPECT_EQ(pick(3, 3, 1), (std::vector<int64_t>{}));
  EXPECT_EQ(pick(std::nullopt, std::nullopt, INT64_MIN).size(), 1u);
  EXPECT_EQ(pick(INT64_MIN, INT64_MAX, 1).size(), 10u);
}

TEST(PyStr, AsciiFastPathsAgreeWithUnicodePaths) {
  // The same text with one non-ASCII code point appended takes the decoding path.
  std::string ascii = "Hello, World! it's A TEST of title-case 42x";
  std::string tail = "\u00e9";
  EXPECT_EQ(py::lower(ascii) + tail, py::lower(ascii + tail));
  EXPECT_EQ(py::upper(ascii) + "\u00c9", py::upper(ascii + tail));
  EXPECT_EQ(py::capitalize(ascii) + tail, py::capitalize(ascii + tail));
  EXPECT_EQ(py::slice(ascii, 2, -3, 2), py::slice(ascii + tail, 2, -4, 2));
  EXPECT_EQ(py::at(ascii, -1), py::at(ascii + tail, -2));
}

TEST(PyStr, RegexCacheAndCount) {
  for (int i = 0; i < 200; ++i) {
    std::string pattern = "a{" + std::to_string(i % 70 + 1) + "}";
    EXPECT_EQ(py::re_sub(pattern, "x", std::string(static_cast<size_t>(i % 70 + 1), 'a') + "b"), "xb");
  }
  EXPECT_EQ(py::re_sub("o", "0", "foo boo", 3), "f00 b0o");
  EXPECT_EQ(py::re_sub("(?P<w>\\w+)", "<\\g<w>>", "ab cd"), "<ab> <cd>");
}
