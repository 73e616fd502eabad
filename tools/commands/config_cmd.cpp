// `mor config show` and `mor config keys`.
#include <iostream>
#include <memory>

#include "commands.h"
#include "mor/config/config.h"

namespace mor::tools {

void add_config_flags(CLI::App& cmd, ConfigFlags& flags, bool positional) {
  if (positional) cmd.add_option("configs", flags.files, "YAML config files, merged in order");
  cmd.add_option("-c,--config", flags.files, "Another YAML config file (repeatable, merged in order)");
  cmd.add_option("-s,--set", flags.overrides, "Override a key: section.key=value (repeatable, applied last)");
}

namespace {

void register_config_commands(CLI::App& app, Action& action) {
  CLI::App* config = app.add_subcommand("config", "Inspect configurations");
  config->require_subcommand(1);

  auto flags = std::make_shared<ConfigFlags>();
  CLI::App* show = config->add_subcommand("show", "Print the resolved configuration as YAML");
  add_config_flags(*show, *flags, /*positional=*/true);
  show->callback([flags, &action] {
    action = [flags] {
      std::cout << mor::config::dump_yaml(mor::config::load(flags->files, flags->overrides));
      return 0;
    };
  });

  CLI::App* keys = config->add_subcommand("keys", "List every configuration key with type, default and meaning");
  keys->callback([&action] {
    action = [] {
      std::cout << mor::config::key_reference();
      return 0;
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("config", register_config_commands);

}  // namespace mor::tools
