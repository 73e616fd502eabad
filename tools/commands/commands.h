// Registration of the `mor` subcommands. Each subcommand file parses its flags, loads a typed
// config, calls the library and returns an exit code; mor.cpp maps errors to one line + exit code.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace mor::tools {

// The action to run after parsing; set by the chosen subcommand's callback.
using Action = std::function<int()>;

// Flags shared by every command that takes a configuration.
struct ConfigFlags {
  std::vector<std::string> files;      // positional and --config, merged in order
  std::vector<std::string> overrides;  // --set a.b=c, applied last
};
void add_config_flags(CLI::App& cmd, ConfigFlags& flags, bool positional);

void register_config_commands(CLI::App& app, Action& action);
void register_model_commands(CLI::App& app, Action& action);

}  // namespace mor::tools
