// Unit tests of mor::core::PyRandom (mor/core/py_random.h) against CPython 3.11's random.Random:
// tests/fixtures/py_random/expected.json (made by tests/tools/make_py_random_fixtures.py) holds,
// per seed, random() values, getrandbits / randrange / sample / shuffle / randint sequences, a
// chained lm-evaluation-harness style run and the head of getstate(); every value must match
// exactly (doubles bit for bit).
#include "mor/core/py_random.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <bit>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#include <stdexcept>

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::core {
namespace {

const nlohmann::json& fixture() {
  static const nlohmann::json json = [] {
    const auto path = std::filesystem::path(MOR_SOURCE_DIR) / "tests/fixtures/py_random/expected.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path.string());
    return nlohmann::json::parse(in);
  }();
  return json;
}

// The int64 seed when it fits, else nullopt (the words constructor covers it).
std::optional<int64_t> int_seed(const nlohmann::json& c) {
  try {
    return std::stoll(c["seed"].get<std::string>());
  } catch (const std::out_of_range&) {
    return std::nullopt;
  }
}

PyRandom make(const nlohmann::json& c) {
  if (auto s = int_seed(c)) return PyRandom(*s);
  return PyRandom(c["words"].get<std::vector<uint32_t>>());
}

void expect_double(double got, const std::string& repr, const std::string& where) {
  const double want = std::strtod(repr.c_str(), nullptr);
  EXPECT_EQ(std::bit_cast<uint64_t>(got), std::bit_cast<uint64_t>(want))
      << where << ": got " << got << " want " << repr;
}

TEST(PyRandomTest, FixtureIsCPython311) {
  EXPECT_EQ(fixture()["python"].get<std::string>().rfind("3.11", 0), 0u);
  EXPECT_GE(fixture()["cases"].size(), 7u);
}

TEST(PyRandomTest, MatchesCPythonForEverySeed) {
  for (const auto& c : fixture()["cases"]) {
    const std::string seed = c["seed"];
    SCOPED_TRACE("seed " + seed);

    // Seeding: getstate()[1] head; both constructors agree when the seed fits int64.
    const auto head = c["state_head"].get<std::vector<uint32_t>>();
    const auto state = make(c).state();
    for (size_t i = 0; i + 1 < head.size(); ++i) EXPECT_EQ(state[i], head[i]) << "mt[" << i << "]";
    EXPECT_EQ(state[PyRandom::kN], head.back());
    if (int_seed(c)) EXPECT_EQ(PyRandom(c["words"].get<std::vector<uint32_t>>()).state(), state);

    PyRandom r = make(c);
    for (size_t i = 0; i < c["random"].size(); ++i) {
      expect_double(r.random(), c["random"][i], "random()[" + std::to_string(i) + "]");
    }
    for (const auto& [k, values] : c["getrandbits"].items()) {
      PyRandom g = make(c);
      for (const auto& v : values) EXPECT_EQ(g.getrandbits(std::stoi(k)), v.get<uint64_t>()) << "k=" << k;
    }
    for (const auto& [n, values] : c["randrange"].items()) {
      PyRandom g = make(c);
      for (const auto& v : values) {
        EXPECT_EQ(g.randrange(std::stoll(n)), v.get<int64_t>()) << "randrange(" << n << ")";
      }
    }
    for (const auto& s : c["sample"]) {
      PyRandom g = make(c);
      EXPECT_EQ(g.sample(s["n"].get<size_t>(), s["k"].get<size_t>()), s["result"].get<std::vector<size_t>>())
          << "sample(range(" << s["n"] << "), " << s["k"] << ")";
    }
    for (const auto& s : c["shuffle"]) {
      PyRandom g = make(c);
      std::vector<int> x(s["n"].get<size_t>());
      std::iota(x.begin(), x.end(), 0);
      g.shuffle(x);
      EXPECT_EQ(x, s["result"].get<std::vector<int>>()) << "shuffle n=" << s["n"];
    }
    {
      PyRandom g = make(c);
      for (const auto& v : c["randint_0_9"]) EXPECT_EQ(g.randint(0, 9), v.get<int64_t>());
    }

    // One generator through several calls, as lm-evaluation-harness uses it.
    const auto& ch = c["chained"];
    PyRandom g = make(c);
    for (const auto& s : ch["samples"]) EXPECT_EQ(g.sample(1000, 6), s.get<std::vector<size_t>>());
    std::vector<int> x(20);
    std::iota(x.begin(), x.end(), 0);
    g.shuffle(x);
    EXPECT_EQ(x, ch["shuffle"].get<std::vector<int>>());
    for (const auto& v : ch["choice"]) EXPECT_EQ(g.choice(7), v.get<size_t>());
    for (const auto& v : ch["randrange_5_17"]) EXPECT_EQ(g.randrange(5, 17), v.get<int64_t>());
    expect_double(g.random(), ch["random"], "chained random()");
  }
}

TEST(PyRandomTest, SampleOfElementsFollowsIndices) {
  const std::vector<std::string> docs{"a", "b", "c", "d", "e", "f", "g", "h"};
  PyRandom a(1234);
  PyRandom b(1234);
  const auto idx = a.sample(docs.size(), 4);
  const auto got = b.sample(docs, 4);
  ASSERT_EQ(got.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i], docs[idx[i]]);
}

TEST(PyRandomTest, StateRoundTripsAndErrors) {
  PyRandom r(42);
  r.random();
  const auto saved = r.state();
  const double next = r.random();
  r.set_state(saved);
  EXPECT_EQ(r.random(), next);
  EXPECT_EQ(PyRandom(-5).state(), PyRandom(5).state());
  EXPECT_EQ(PyRandom(0).getrandbits(0), 0u);
  EXPECT_THROW(r.randbelow(0), std::invalid_argument);
  EXPECT_THROW(r.randrange(3, 3), std::invalid_argument);
  EXPECT_THROW(r.sample(3, 4), std::invalid_argument);
  EXPECT_THROW(r.getrandbits(65), std::invalid_argument);
  auto bad = saved;
  bad[PyRandom::kN] = PyRandom::kN + 1;
  EXPECT_THROW(r.set_state(bad), std::invalid_argument);
}

}  // namespace
}  // namespace mor::core
