// Catching mor::Error in the torch-free unit tests.
//   error_of(fn)      the message of the mor::Error that fn throws, or kNoError when it throws none;
//   expect_error(fn)  the same, and a test failure when fn throws nothing.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "mor/core/error.h"

namespace mor::testing {

inline const std::string kNoError = "(no error)";

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const mor::Error& e) {
    return e.what();
  }
  return kNoError;
}

template <typename Fn>
std::string expect_error(Fn&& fn) {
  std::string message = error_of(fn);
  if (message == kNoError) ADD_FAILURE() << "expected a mor::Error";
  return message;
}

}  // namespace mor::testing
