// `mor model info`: parameter and FLOP accounting of a model configuration.
#include <iostream>
#include <memory>

#include "commands.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/model/accounting.h"

namespace mor::tools {

void register_model_commands(CLI::App& app, Action& action) {
  CLI::App* model = app.add_subcommand("model", "Inspect models");
  model->require_subcommand(1);

  struct InfoFlags {
    ConfigFlags config;
    int64_t context = 0;
  };
  auto flags = std::make_shared<InfoFlags>();
  CLI::App* info = model->add_subcommand(
      "info", "Parameters, FLOPs per token and KV cache per depth of a model config");
  add_config_flags(*info, flags->config, /*positional=*/true);
  info->add_option("--context", flags->context,
                   "Sequence length for attention FLOPs (default: train.seq_len, else model.max_seq_len)");
  info->callback([flags, &action] {
    action = [flags] {
      MOR_CHECK(!flags->config.files.empty(), "mor model info: give a config file, e.g. configs/model/mor-360m-ec-r2.yaml");
      const auto cfg = mor::config::load(flags->config.files, flags->config.overrides);
      const int64_t context = flags->context > 0 ? flags->context : mor::config::resolved_seq_len(cfg);
      std::cout << mor::model::format_model_info(cfg.model, context);
      return 0;
    };
  });
}

}  // namespace mor::tools
