// `mor model info`: parameter and FLOP accounting of a model configuration, optionally checked
// against a real instance (--instantiate).
#include <ATen/Context.h>
#include <ATen/ops/randint.h>

#include <algorithm>

#include <cstdio>
#include <iostream>
#include <memory>

#include "commands.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/model/accounting.h"
#include "mor/model/model.h"

namespace mor::tools {

namespace {

void print_routing(const char* title, const mor::model::ForwardOutput& out) {
  std::printf("  %-28s", title);
  for (size_t r = 0; r < out.recursions.size(); ++r) {
    const auto& s = out.recursions[r];
    std::printf("  r%zu %lld/%lld", r, static_cast<long long>(s.active), static_cast<long long>(s.candidates));
  }
  std::printf("\n");
}

// Builds the model on the CPU (fp32), checks the parameter count against the accounting and runs a
// training forward (top-k) and an inference forward (causal routing) on a seeded random batch.
void instantiate(const mor::config::Config& cfg, int64_t context) {
  const auto acc = mor::model::account(cfg.model, context);
  const double gib = static_cast<double>(acc.total_params) * 4 / (1 << 30);
  MOR_CHECK(gib < 8.0, "mor model info --instantiate: the model needs ", gib,
            " GiB in fp32; instantiate a smaller config");
  mor::model::MoRModel model(cfg.model);
  std::printf("\ninstance (CPU, fp32, seed %lld)\n", static_cast<long long>(cfg.model.seed));
  std::printf("  parameters %lld, accounting %lld: %s\n", static_cast<long long>(model.num_parameters()),
              static_cast<long long>(acc.total_params),
              model.num_parameters() == acc.total_params ? "match" : "MISMATCH");
  MOR_CHECK(model.num_parameters() == acc.total_params, "parameter count differs from the accounting");
  if (model.layout().num_recursions == 0) return;
  const int64_t seq = std::min<int64_t>(context, 64);
  at::manual_seed(cfg.model.seed);
  const at::Tensor tokens = at::randint(cfg.model.vocab_size, {2, seq}, at::kLong);
  std::printf("  tokens active / scored per recursion on a random [2, %lld] batch:\n", static_cast<long long>(seq));
  mor::model::ForwardOptions train;
  train.training = true;
  print_routing("training (top-k)", model.forward(tokens, train));
  print_routing("inference (model default)", model.forward(tokens, {}));
}

void register_model_commands(CLI::App& app, Action& action) {
  CLI::App* model = app.add_subcommand("model", "Inspect models");
  model->require_subcommand(1);

  struct InfoFlags {
    ConfigFlags config;
    int64_t context = 0;
    bool instantiate = false;
  };
  auto flags = std::make_shared<InfoFlags>();
  CLI::App* info = model->add_subcommand(
      "info", "Parameters, FLOPs per token and KV cache per depth of a model config");
  add_config_flags(*info, flags->config, /*positional=*/true);
  info->add_option("--context", flags->context,
                   "Sequence length for attention FLOPs (default: train.seq_len, else model.max_seq_len)");
  info->add_flag("--instantiate", flags->instantiate,
                 "Also build the model on the CPU, check its parameter count and run it on a random batch");
  info->callback([flags, &action] {
    action = [flags] {
      MOR_CHECK(!flags->config.files.empty(),
                "mor model info: give a config file, e.g. configs/model/mor-360m-ec-r2.yaml");
      const auto cfg = mor::config::load(flags->config.files, flags->config.overrides);
      const int64_t context = flags->context > 0 ? flags->context : mor::config::resolved_seq_len(cfg);
      std::cout << mor::model::format_model_info(cfg.model, context);
      std::cout.flush();
      if (flags->instantiate) instantiate(cfg, context);
      return 0;
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("model", register_model_commands);

}  // namespace mor::tools
