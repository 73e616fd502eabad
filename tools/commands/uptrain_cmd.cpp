// `mor uptrain SOURCE_BUNDLE --config target.yaml --strategy S [--seed N] --out DIR`: initialise a
// recursive or MoR model from a pretrained vanilla bundle (mor-spec §2.2 strategies) and write it
// as a bundle; `mor train target.yaml --set train.init_from=DIR` then trains it.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/model/bundle.h"
#include "mor/model/uptrain.h"

namespace mor::tools {

namespace {

struct UptrainFlags {
  std::string source;
  ConfigFlags config;
  std::string strategy = "stepwise";
  int64_t seed = 0;
  std::string out;
};

void register_uptrain_commands(CLI::App& app, Action& action) {
  auto flags = std::make_shared<UptrainFlags>();
  CLI::App* cmd = app.add_subcommand(
      "uptrain", "Initialise a recursive/MoR model from a pretrained vanilla bundle (stepwise, lower, upper, "
                 "random, average)");
  cmd->add_option("source", flags->source, "Vanilla model bundle (mor export / mor import)")->required();
  add_config_flags(*cmd, flags->config, /*positional=*/false);
  cmd->add_option("--strategy", flags->strategy, "stepwise | lower | upper | random | average (default stepwise)");
  cmd->add_option("--seed", flags->seed, "Seed of the random strategy");
  cmd->add_option("--out", flags->out, "Output bundle directory")->required();
  cmd->callback([flags, &action] {
    action = [flags] {
      MOR_CHECK(!flags->config.files.empty(), "mor uptrain: give the target model with --config, e.g. "
                                              "--config configs/model/mor-360m-ec-r2.yaml");
      const auto cfg = config::load(flags->config.files, flags->config.overrides);
      const auto strategy = model::uptrain_strategy_from_name(flags->strategy);
      const model::BundleInfo info = model::read_bundle_info(flags->source);
      const auto source = model::load_bundle(flags->source, at::kFloat, at::kCPU);
      const auto sources = model::uptrain_sources(info.model, cfg.model, strategy, static_cast<uint64_t>(flags->seed));
      const auto target = model::uptrain(*source, cfg.model, strategy, static_cast<uint64_t>(flags->seed));
      model::BundleOptions opts;
      opts.tokenizer_json = info.tokenizer_json;
      opts.bos_token_id = info.bos_token_id;
      opts.eos_token_id = info.eos_token_id;
      opts.source = std::string("uptrain ") + model::uptrain_strategy_name(strategy) + " from " + flags->source;
      opts.full_config = &cfg;
      model::save_bundle(*target, flags->out, opts);
      std::printf("uptrained %s (%s) from %s with %s:\n", cfg.model.name.c_str(),
                  config::to_string(cfg.model.recursion.sharing), flags->source.c_str(),
                  model::uptrain_strategy_name(strategy));
      for (size_t p = 0; p < sources.size(); ++p) {
        std::string layers;
        for (int64_t s : sources[p]) layers += (layers.empty() ? "" : ", ") + std::to_string(s);
        std::printf("  parameter set %zu <- source layer%s %s\n", p, sources[p].size() > 1 ? "s (mean)" : "",
                    layers.c_str());
      }
      std::printf("wrote %s; train it with: mor train CONFIG --set train.init_from=%s\n", flags->out.c_str(),
                  flags->out.c_str());
      return 0;
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("uptrain", register_uptrain_commands);

}  // namespace mor::tools
