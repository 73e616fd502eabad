// Checkpoint -> serving bundle, streamed from the rank files. See include/mor/train/export.h.
#include "mor/train/export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <map>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/io/tokenizer.h"
#include "mor/train/checkpoint.h"

namespace mor::train {

std::string resolve_checkpoint(const std::string& path) {
  MOR_CHECK(core::is_directory(path), path, ": no such directory");
  if (core::file_exists(path + "/COMPLETE")) return path;
  if (core::file_exists(path + "/index.json"))
    fail(path, ": incomplete checkpoint (no COMPLETE marker; it was interrupted while saving)");
  if (auto latest = latest_checkpoint(path)) return *latest;
  fail(path, ": neither a checkpoint (no COMPLETE) nor a run directory with a complete checkpoint (",
       checkpoints_root(path), ")");
}

ExportResult export_checkpoint(const std::string& checkpoint_or_run_dir, const std::string& out_dir,
                               model::BundleOptions options) {
  ExportResult result;
  const std::string dir = resolve_checkpoint(checkpoint_or_run_dir);
  result.checkpoint = dir;
  const config::Config cfg = checkpoint_config(dir);
  const CheckpointReader reader(dir);
  const std::string index_path = dir + "/index.json";
  result.step = reader.state().step;

  // The parameters the configuration defines (shapes only), matched against the index.
  const model::MoRModel spec(cfg.model, at::kFloat, at::kMeta);
  struct Location {
    int64_t unit;
    const CheckpointParam* param;
  };
  std::map<std::string, Location> where;
  for (size_t u = 0; u < reader.units().size(); ++u) {
    for (const CheckpointParam& cp : reader.units()[u].params) {
      bool known = false;
      for (const auto& p : spec.parameters()) {
        if (p.name != cp.name) continue;
        known = true;
        MOR_CHECK(p.tensor.sizes().vec() == cp.shape, index_path, ": tensor '", cp.name, "': shape ",
                  at::IntArrayRef(cp.shape), " does not match config.yaml's ", p.tensor.sizes());
      }
      MOR_CHECK(known, index_path, ": tensor '", cp.name, "' is not a parameter of the model config.yaml describes");
      where[cp.name] = {static_cast<int64_t>(u), &cp};
    }
  }
  for (const auto& p : spec.parameters())
    MOR_CHECK(where.count(p.name), index_path, ": tensor '", p.name, "' is missing");

  const model::TensorSource source = [&](const model::NamedParam& p) {
    const Location& loc = where.at(p.name);
    at::Tensor out = at::empty(p.tensor.sizes(), at::kFloat);
    reader.read(loc.unit, "master", loc.param->offset, loc.param->numel, out.data_ptr<float>());
    result.parameters += loc.param->numel;
    return out;
  };

  options.full_config = &cfg;
  options.source = "checkpoint " + dir + " (step " + std::to_string(result.step) + ")";
  options.tokenizer_json.clear();
  options.bos_token_id.reset();
  options.eos_token_id.reset();
  const std::string& tok = cfg.data.tokenizer;
  if (!tok.empty() && core::file_exists(tok)) {
    options.tokenizer_json = tok;
    const auto eos = io::Tokenizer::from_file(tok).eos_id();
    if (eos) {
      options.bos_token_id = *eos;
      options.eos_token_id = *eos;
    } else {
      result.notes.push_back(tok + " has no end-of-text token: bos/eos ids left unset");
    }
  } else {
    result.notes.push_back(tok.empty() ? std::string("data.tokenizer is not set: the bundle has no tokenizer")
                                       : "data.tokenizer " + tok + " does not exist: the bundle has no tokenizer");
  }
  options.balance_bias.clear();
  if (cfg.model.router.kind == config::RouterKind::kToken) options.balance_bias = reader.state().balance_bias;

  model::write_bundle(out_dir, cfg.model, spec.parameters(), source, options);
  result.tensors = static_cast<int64_t>(spec.parameters().size());
  return result;
}

std::unique_ptr<model::MoRModel> load_checkpoint_model(const std::string& checkpoint_or_run_dir,
                                                       at::ScalarType dtype, at::Device device,
                                                       config::Config* config) {
  const std::string dir = resolve_checkpoint(checkpoint_or_run_dir);
  const config::Config cfg = checkpoint_config(dir);
  const CheckpointReader reader(dir);
  auto model = std::make_unique<model::MoRModel>(cfg.model, at::kFloat, at::kCPU);
  std::map<std::string, at::Tensor> values;
  for (auto& [name, value] : load_consolidated(dir)) values.emplace(name, std::move(value));
  {
    const at::NoGradGuard no_grad;
    for (const auto& p : model->parameters()) {
      const auto it = values.find(p.name);
      MOR_CHECK(it != values.end(), dir, ": the checkpoint has no tensor ", p.name);
      MOR_CHECK(it->second.sizes() == p.tensor.sizes(), dir, ": tensor ", p.name, " has shape ", it->second.sizes(),
                ", the configuration needs ", p.tensor.sizes());
      p.tensor.copy_(it->second);
    }
    const auto& bias = reader.state().balance_bias;
    if (!bias.empty() && model->balance_bias().defined() && model->balance_bias().numel() == static_cast<int64_t>(bias.size())) {
      at::Tensor b = model->balance_bias();
      b.copy_(at::tensor(bias, at::kDouble).to(b.options()));
    }
  }
  if (dtype != at::kFloat || device != at::Device(at::kCPU)) {
    // Rebuild on the target device/dtype from the loaded fp32 values.
    auto moved = std::make_unique<model::MoRModel>(cfg.model, dtype, device);
    const at::NoGradGuard no_grad;
    for (size_t i = 0; i < moved->parameters().size(); ++i) {
      moved->parameters()[i].tensor.copy_(model->parameters()[i].tensor);
    }
    if (model->balance_bias().defined()) {
      at::Tensor b = moved->balance_bias();
      b.copy_(model->balance_bias());
    }
    model = std::move(moved);
  }
  if (config) *config = cfg;
  return model;
}

}  // namespace mor::train
