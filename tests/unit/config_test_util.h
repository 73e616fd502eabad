// Helpers shared by the mor::config unit tests (config_test.cpp, config_validation_test.cpp).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/core/error.h"
#include "error_testing.h"

// A valid expert-choice context (middle_cycle, 6 layers, N_r = 2) for router rules.
#define EC_MODEL "model:\n  num_layers: 6\n  recursion:\n    sharing: middle_cycle\n    num_recursions: 2\n"
#define EC_ROUTER EC_MODEL "  router:\n    kind: expert\n    expert:\n"
#define TC_ROUTER EC_MODEL "  router:\n    kind: token\n    token:\n"
#define SPLIT_32_BY_4 "model:\n  num_layers: 32\n  recursion:\n    sharing: middle_cycle\n    num_recursions: 4\n"

namespace mor::config::test {

// Loads `yaml` as the file "t.yaml" (error messages say "t.yaml:LINE").
inline Config load_yaml(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return load_from_string(yaml, "t.yaml", overrides);
}

// The mor::Error message of `action`, or "" when it does not throw.
using mor::testing::error_of;
using mor::testing::kNoError;

inline ::testing::AssertionResult fails_with(const std::function<void()>& action, const std::string& needle) {
  const std::string message = error_of(action);
  if (message == kNoError) return ::testing::AssertionFailure() << "no mor::Error; expected '" << needle << "'";
  if (message.find(needle) == std::string::npos) {
    return ::testing::AssertionFailure() << "error '" << message << "' lacks '" << needle << "'";
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult yaml_fails_with(const std::string& yaml, const std::string& needle,
                                                  const std::vector<std::string>& overrides = {}) {
  return fails_with([&] { load_yaml(yaml, overrides); }, needle);
}

// Equal values in every section (the defaulted operator== of each; origins are not compared). On a
// mismatch the message names the differing sections and shows both configs as dumped YAML.
inline ::testing::AssertionResult same_values(const Config& a, const Config& b) {
  std::string differing;
  auto check = [&](bool equal, const char* section) {
    if (!equal) differing += (differing.empty() ? "" : ", ") + std::string(section);
  };
  check(a.model == b.model, "model");
  check(a.train == b.train, "train");
  check(a.data == b.data, "data");
  check(a.eval == b.eval, "eval");
  check(a.engine == b.engine, "engine");
  if (differing.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "configs differ in " << differing << "\n--- first:\n"
                                       << dump_yaml(a) << "--- second:\n"
                                       << dump_yaml(b);
}

}  // namespace mor::config::test
