// A whole JSON file parsed with nlohmann::json (or ordered_json): the one place that turns a read
// or parse failure into a mor::Error naming the file ("<path>: invalid JSON: ..."). Header-only and
// templated so core itself does not depend on nlohmann; callers include <nlohmann/json.hpp>.
#pragma once

#include <string>

#include "mor/core/error.h"
#include "mor/core/file.h"

namespace mor::core {

template <class Json>
Json read_json_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return Json::parse(text);
  } catch (const typename Json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
}

}  // namespace mor::core
