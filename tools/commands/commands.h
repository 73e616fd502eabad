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

// Each tools/commands/*.cpp registers its subcommand group at static-initialisation time:
//   MOR_REGISTER_COMMANDS("data", register_data_commands);
// mor.cpp adds the groups in name order. No other file needs editing to add a group.
using RegisterFn = void (*)(CLI::App& app, Action& action);
struct CommandRegistrar {
  CommandRegistrar(const char* name, RegisterFn fn);
};
// Registered groups, sorted by name.
std::vector<std::pair<std::string, RegisterFn>> registered_commands();

}  // namespace mor::tools

#define MOR_REGISTER_COMMANDS(name, fn) \
  static const ::mor::tools::CommandRegistrar mor_registrar_##fn(name, fn)

namespace mor::tools {

}  // namespace mor::tools
