// Logging front end over spdlog. Header is spdlog/fmt-free on purpose: LibTorch bundles its own fmt,
// so torch translation units must never include Debian's fmt/spdlog headers.
#pragma once

#include <string>
#include <string_view>

namespace mor::core {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };

void set_log_level(LogLevel level);
// Parses "debug|info|warn|error|off"; throws mor::Error naming `source` otherwise.
LogLevel parse_log_level(std::string_view name, std::string_view source);

void log_debug(std::string_view message);
void log_info(std::string_view message);
void log_warn(std::string_view message);
void log_error(std::string_view message);

}  // namespace mor::core
