// mor::Error and MOR_CHECK: the one exception type library code throws for user-facing failures.
// Invariant: library code never exits; tools/ maps mor::Error to a one-line message and exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace mor {

// What went wrong, in the user's terms (file, key, field). `what()` is the full one-line message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws mor::Error built from the streamed arguments.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace mor

// MOR_CHECK(cond, parts...) throws mor::Error(parts...) when cond is false.
#define MOR_CHECK(cond, ...)          \
  do {                                \
    if (!(cond)) ::mor::fail(__VA_ARGS__); \
  } while (0)
