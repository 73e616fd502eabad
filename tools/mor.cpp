// The `mor` executable: subcommand dispatch and the mapping of errors to one line + exit code.
// Exit codes: 0 success, 1 user error (bad config, file, input), 2 usage error, 3 internal error.
#include <c10/util/Exception.h>

#include <algorithm>
#include <iostream>

#include "commands/commands.h"
#include "mor/core/error.h"

namespace mor::tools {

namespace {
std::vector<std::pair<std::string, RegisterFn>>& registry() {
  static std::vector<std::pair<std::string, RegisterFn>> groups;
  return groups;
}
}  // namespace

CommandRegistrar::CommandRegistrar(const char* name, RegisterFn fn) { registry().emplace_back(name, fn); }

std::vector<std::pair<std::string, RegisterFn>> registered_commands() {
  auto groups = registry();
  std::sort(groups.begin(), groups.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return groups;
}

}  // namespace mor::tools

int main(int argc, char** argv) {
  CLI::App app{"mor: train, evaluate and serve Mixture-of-Recursions language models"};
  app.set_version_flag("--version", "mor " MOR_VERSION);
  app.require_subcommand(1);
  mor::tools::Action action;
  for (const auto& [name, fn] : mor::tools::registered_commands()) fn(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "mor: usage error: " << e.what() << " (see mor --help)\n";
    return 2;
  }
  try {
    return action ? action() : 0;
  } catch (const mor::Error& e) {
    std::cerr << "mor: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "mor: internal error (torch): " << e.what_without_backtrace() << "\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "mor: internal error: " << e.what() << "\n";
    return 3;
  }
}
