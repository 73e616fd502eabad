// `mor model info`: parameter and FLOP accounting of a model configuration, optionally checked
// against a real instance (--instantiate).
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/randint.h>

#include <algorithm>
#include <cmath>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/data/loader.h"
#include "mor/io/tokenizer.h"
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

// With data.val_shards and data.tokenizer present: the loss of the (untrained) model on the first
// validation batch, with document masking, next to ln(V), the loss of a uniform prediction.
void validation_batch(const mor::config::Config& cfg, const mor::model::MoRModel& model, int64_t context) {
  if (cfg.data.val_shards.empty() || cfg.data.tokenizer.empty()) return;
  if (!std::filesystem::exists(cfg.data.tokenizer)) {
    std::printf("  validation batch: skipped, no tokenizer at %s (prepare data first, e.g. tools/demo_data.sh)\n",
                cfg.data.tokenizer.c_str());
    return;
  }
  const auto tokenizer = mor::io::Tokenizer::from_file(cfg.data.tokenizer);
  MOR_CHECK(tokenizer.vocab_size() <= cfg.model.vocab_size, "data.tokenizer: ", cfg.data.tokenizer, " has ",
            tokenizer.vocab_size(), " tokens, more than model.vocab_size ", cfg.model.vocab_size);
  mor::data::LoaderOptions lo;
  lo.shards = {cfg.data.val_shards};
  lo.vocab_size = cfg.model.vocab_size;
  lo.seq_len = std::min<int64_t>(context, cfg.model.max_seq_len);
  lo.rows_per_rank = 2;
  lo.shuffle = false;
  lo.document_ids = tokenizer.eos_id().has_value();
  lo.eos_id = tokenizer.eos_id().value_or(-1);
  mor::data::Loader loader(lo);
  auto batch = loader.next();
  const auto as_tensor = [&](std::vector<int32_t>& v) {
    return at::from_blob(v.data(), {batch.rows, batch.seq_len}, at::kInt).to(at::kLong);
  };
  mor::model::ForwardOptions opt;
  if (lo.document_ids) opt.documents = as_tensor(batch.doc_ids);
  const at::NoGradGuard no_grad;
  const auto out = model.forward(as_tensor(batch.inputs), opt);
  const double loss = model.loss(out, as_tensor(batch.targets)).lm.item<double>();
  std::printf("  validation batch [%lld, %lld] from %s (document masking %s): LM loss %.4f, ln V = %.4f\n",
              static_cast<long long>(batch.rows), static_cast<long long>(batch.seq_len),
              cfg.data.val_shards.c_str(), lo.document_ids ? "on" : "off", loss,
              std::log(static_cast<double>(cfg.model.vocab_size)));
}

// Builds the model on the CPU (fp32), checks the parameter count against the accounting, scores the
// first validation batch when the config names prepared data, and runs a training forward (top-k)
// and an inference forward (causal routing) on a seeded random batch.
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
  validation_batch(cfg, model, context);
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
