// `mor export` (checkpoint or run -> serving bundle), `mor import hf` (Hugging Face Llama directory
// -> bundle) and `mor ckpt inspect` (bundles, checkpoints, runs, Hugging Face directories and single
// .safetensors files: format, config, tensors, parameter counts, file sizes).
//
// The `import` group is shared: other files add their own `import <format>` subcommands through
// import_command(app), which creates the group on first use (any registration order works).
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>

#include "commands.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/json_file.h"
#include "mor/io/hf_config.h"
#include "mor/io/safetensors.h"
#include "mor/model/bundle.h"
#include "mor/train/checkpoint.h"
#include "mor/train/export.h"

namespace mor::tools {

// The subcommand group `name` of `app`, created (requiring one subcommand) when absent.
CLI::App* command_group(CLI::App& app, const std::string& name, const std::string& description) {
  try {
    return app.get_subcommand(name);
  } catch (const CLI::OptionNotFound&) {
    CLI::App* group = app.add_subcommand(name, description);
    group->require_subcommand(1);
    return group;
  }
}

CLI::App* import_command(CLI::App& app) {
  return command_group(app, "import", "Convert models from other formats into mor bundles");
}

namespace {

using nlohmann::json;

// "5GB", "500MB", "2GiB", "64KB", "1000" -> bytes (KB/MB/GB decimal as in transformers; KiB/MiB/GiB binary).
int64_t parse_size(const std::string& text, const char* flag) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    fail(flag, ": expected a size such as 5GB or 500MB, got '", text, "'");
  }
  std::string unit = text.substr(used);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  static const std::map<std::string, double> scales = {
      {"", 1},       {"B", 1},           {"KB", 1e3},           {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12},  {"KIB", 1024.0},    {"MIB", 1048576.0},    {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
  const auto it = scales.find(unit);
  MOR_CHECK(it != scales.end(), flag, ": unknown unit '", text.substr(used), "' in '", text,
            "' (B, KB, MB, GB, KiB, MiB, GiB)");
  const double bytes = value * it->second;
  MOR_CHECK(bytes >= 1 && bytes < 9e18, flag, ": expected a positive size, got '", text, "'");
  return static_cast<int64_t>(std::llround(bytes));
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string human_bytes(int64_t bytes) {
  char buf[64];
  if (bytes >= 1000000000) std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else if (bytes >= 1000000) std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  else if (bytes >= 1000) std::snprintf(buf, sizeof buf, "%.1f kB", bytes / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  return buf;
}

// One line describing the architecture of a model configuration.
std::string variant_summary(const config::ModelConfig& m) {
  using config::RouterKind;
  std::string kind;
  if (m.recursion.sharing == config::Sharing::kNone) {
    kind = "vanilla Llama";
  } else if (m.router.kind == RouterKind::kNone) {
    kind = std::string("recursive (") + config::to_string(m.recursion.sharing) + ", N_r " +
           std::to_string(m.recursion.num_recursions) + ")";
  } else {
    kind = std::string("MoR ") + (m.router.kind == RouterKind::kExpert ? "expert-choice" : "token-choice") + " (" +
           config::to_string(m.recursion.sharing) + ", N_r " + std::to_string(m.recursion.num_recursions) +
           ", router " + config::to_string(m.router.arch) + ", KV " + config::to_string(m.kv_mode) +
           ", inference routing " + config::to_string(m.inference_routing) + ")";
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "; %lld layers, d %lld, ff %lld, heads %lld/%lld, vocab %lld, context %lld%s",
                static_cast<long long>(m.num_layers), static_cast<long long>(m.hidden_size),
                static_cast<long long>(m.intermediate_size), static_cast<long long>(m.num_heads),
                static_cast<long long>(m.num_kv_heads), static_cast<long long>(m.vocab_size),
                static_cast<long long>(m.max_seq_len), m.tie_embeddings ? ", tied embeddings" : "");
  return kind + buf;
}

std::string model_line(const config::ModelConfig& m) {
  return m.name.empty() ? variant_summary(m) : m.name + ": " + variant_summary(m);
}

// Parameter group of a tensor name, for the totals.
const char* group_of(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("embed_tokens")) return "embedding";
  if (name.rfind("lm_head", 0) == 0) return "lm_head";
  if (has("aux_routers")) return "aux_routers";
  if (has("model.router")) return "routers";
  if (has("norm")) return "norms";
  if (has("self_attn")) return "attention";
  if (has("mlp")) return "mlp";
  return "other";
}

struct TensorRow {
  std::string name, dtype;
  std::vector<int64_t> shape;
};

void print_tensors(const std::vector<TensorRow>& rows) {
  size_t width = 4;
  for (const auto& r : rows) width = std::max(width, r.name.size());
  std::map<std::string, int64_t> groups;
  int64_t total = 0;
  std::printf("tensors (%zu):\n", rows.size());
  for (const auto& r : rows) {
    int64_t n = 1;
    for (int64_t d : r.shape) n *= d;
    groups[group_of(r.name)] += n;
    total += n;
    std::printf("  %-*s  %-5s %-16s %12lld\n", static_cast<int>(width), r.name.c_str(), r.dtype.c_str(),
                shape_text(r.shape).c_str(), static_cast<long long>(n));
  }
  std::printf("parameters:\n");
  for (const auto& [g, n] : groups) std::printf("  %-12s %14lld\n", g.c_str(), static_cast<long long>(n));
  std::printf("  %-12s %14lld\n", "total", static_cast<long long>(total));
}

std::vector<TensorRow> rows_of(const std::vector<const io::SafetensorsReader*>& readers) {
  std::vector<TensorRow> rows;
  for (const auto* r : readers)
    for (const auto& t : r->tensors()) rows.push_back({t.name, io::dtype_name(t.dtype), t.shape});
  return rows;
}

std::string file_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void print_weight_files(const model::WeightFiles& weights) {
  std::printf("files:\n");
  for (const auto& r : weights.readers())
    std::printf("  %-36s %s\n", file_name(r.path()).c_str(), human_bytes(core::file_size(r.path())).c_str());
}

std::vector<TensorRow> ordered_rows(const model::WeightFiles& weights) {
  std::vector<TensorRow> rows;
  for (const auto& name : weights.names()) {
    const auto* e = weights.find(name);
    rows.push_back({name, io::dtype_name(e->info->dtype), e->info->shape});
  }
  return rows;
}

void inspect_bundle(const std::string& dir) {
  const model::BundleInfo info = model::read_bundle_info(dir);
  std::printf("bundle %s\n  format mor-bundle, version %d (written by mor %s)\n", dir.c_str(), info.format_version,
              info.mor_version.c_str());
  if (!info.source.empty()) std::printf("  source: %s\n", info.source.c_str());
  std::printf("  dtype: %s\n  model: %s\n", info.dtype.c_str(), model_line(info.model).c_str());
  auto id = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("none"); };
  std::printf("  tokenizer: %s (bos %s, eos %s)\n", info.tokenizer_json.empty() ? "none" : "tokenizer.json",
              id(info.bos_token_id).c_str(), id(info.eos_token_id).c_str());
  if (!info.balance_bias.empty()) {
    std::printf("  balance bias:");
    for (double b : info.balance_bias) std::printf(" %g", b);
    std::printf("\n");
  }
  const model::WeightFiles weights(dir);
  print_weight_files(weights);
  print_tensors(ordered_rows(weights));
}

void inspect_hf_dir(const std::string& dir) {
  const io::HfConfigRead hf = io::read_hf_config(dir + "/config.json");
  std::printf("Hugging Face directory %s (no mor_bundle.json; `mor import hf` converts it)\n", dir.c_str());
  std::printf("  dtype: %s\n  model: %s\n", hf.extras.torch_dtype.c_str(), model_line(hf.model).c_str());
  const model::WeightFiles weights(dir);
  print_weight_files(weights);
  print_tensors(ordered_rows(weights));
}

void print_checkpoint(const std::string& dir);

void inspect_checkpoint(const std::string& dir) {
  try {
    print_checkpoint(dir);
  } catch (const json::exception& e) {
    fail(dir, "/index.json: unexpected content: ", e.what());
  }
}

void print_checkpoint(const std::string& dir) {
  const json index = core::read_json_file<json>(dir + "/index.json");
  const json state = core::read_json_file<json>(dir + "/state.json");
  std::printf("checkpoint %s\n  format %s, version %d; step %lld, world size %lld, sharding %s%s\n", dir.c_str(),
              index.value("format", "?").c_str(), index.value("format_version", 0),
              static_cast<long long>(state.value("step", int64_t{0})),
              static_cast<long long>(index.value("world_size", int64_t{0})), index.value("sharding", "?").c_str(),
              core::file_exists(dir + "/COMPLETE") ? "" : " (INCOMPLETE: no COMPLETE marker)");
  std::printf("  tokens %lld, FLOPs %.3g\n", static_cast<long long>(state.value("tokens", int64_t{0})),
              state.value("flops", 0.0));
  const config::Config cfg = train::checkpoint_config(dir);
  std::printf("  model: %s\n", model_line(cfg.model).c_str());
  std::printf("rank files (fp32 master weights and AdamW moments):\n");
  for (const auto& f : index.at("files")) {
    const std::string path = dir + "/" + f.get<std::string>();
    std::printf("  %-36s %s\n", f.get<std::string>().c_str(),
                core::file_exists(path) ? human_bytes(core::file_size(path)).c_str() : "MISSING");
  }
  std::vector<TensorRow> rows;
  for (const auto& unit : index.at("units"))
    for (const auto& p : unit.at("params")) rows.push_back({p.at("name").get<std::string>(), "F32", p.at("shape").get<std::vector<int64_t>>()});
  print_tensors(rows);
}

void inspect(const std::string& path_in) {
  std::string path = path_in;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (core::file_exists(path) && !core::is_directory(path)) {
    MOR_CHECK(core::ends_with(path, ".safetensors"), path, ": not a .safetensors file, bundle, checkpoint or run");
    const io::SafetensorsReader reader(path);
    std::printf("safetensors file %s (%s)\n", path.c_str(), human_bytes(core::file_size(path)).c_str());
    for (const auto& [k, v] : reader.metadata()) {
      if (k.size() > 2 && k[0] == 'u' && std::isdigit(static_cast<unsigned char>(k[1]))) continue;  // slice offsets
      std::printf("  metadata %s = %s\n", k.c_str(), v.c_str());
    }
    print_tensors(rows_of({&reader}));
    return;
  }
  MOR_CHECK(core::is_directory(path), path, ": no such file or directory");
  if (core::file_exists(path + "/mor_bundle.json")) return inspect_bundle(path);
  if (core::file_exists(path + "/index.json") && core::file_exists(path + "/config.yaml"))
    return inspect_checkpoint(path);
  const auto all = train::complete_checkpoints(path);
  if (!all.empty()) {
    std::printf("run %s: %zu complete checkpoint(s):", path.c_str(), all.size());
    for (const auto& c : all) std::printf(" %s", file_name(c).c_str());
    std::printf("\nthe newest:\n");
    return inspect_checkpoint(all.back());
  }
  if (core::file_exists(path + "/config.json")) return inspect_hf_dir(path);
  fail(path, ": not a bundle (mor_bundle.json), checkpoint (index.json), run (checkpoints/) or Hugging Face directory "
       "(config.json)");
}

struct ExportFlags {
  std::string input, out, dtype = "float32", max_shard = "5GB";
};

struct ImportFlags {
  std::string input, out, dtype, max_shard = "5GB";
};

void register_export_commands(CLI::App& app, Action& action) {
  auto f = std::make_shared<ExportFlags>();
  CLI::App* cmd = app.add_subcommand("export", "Write a serving bundle from a checkpoint or a run's newest checkpoint");
  cmd->add_option("checkpoint", f->input, "Checkpoint directory, or run directory (its newest complete checkpoint)")
      ->required();
  cmd->add_option("-o,--out", f->out, "Bundle directory to write (replaced if it is a bundle)")->required();
  cmd->add_option("--dtype", f->dtype, "Stored weight dtype: float32, bfloat16, float16")->capture_default_str();
  cmd->add_option("--max-shard-size", f->max_shard, "Split model.safetensors above this size (e.g. 5GB, 500MB)")
      ->capture_default_str();
  cmd->callback([f, &action] {
    action = [f] {
      model::BundleOptions options;
      options.dtype = model::dtype_from_name(f->dtype, "--dtype");
      options.max_shard_bytes = parse_size(f->max_shard, "--max-shard-size");
      const train::ExportResult r = train::export_checkpoint(f->input, f->out, options);
      for (const auto& note : r.notes) std::printf("note: %s\n", note.c_str());
      std::printf("exported %s (step %lld) to %s: %lld tensors, %lld parameters, %s\n", r.checkpoint.c_str(),
                  static_cast<long long>(r.step), f->out.c_str(), static_cast<long long>(r.tensors),
                  static_cast<long long>(r.parameters), model::dtype_name(options.dtype).c_str());
      return 0;
    };
  });
}

void register_import_commands(CLI::App& app, Action& action) {
  auto f = std::make_shared<ImportFlags>();
  CLI::App* cmd = import_command(app)->add_subcommand(
      "hf", "A Hugging Face Llama-family directory (config.json, safetensors, tokenizer.json) -> bundle");
  cmd->add_option("dir", f->input, "Hugging Face model directory")->required();
  cmd->add_option("-o,--out", f->out, "Bundle directory to write (replaced if it is a bundle)")->required();
  cmd->add_option("--dtype", f->dtype, "Convert the weights to float32, bfloat16 or float16 (default: keep theirs)");
  cmd->add_option("--max-shard-size", f->max_shard, "Split model.safetensors above this size")->capture_default_str();
  cmd->callback([f, &action] {
    action = [f] {
      std::optional<at::ScalarType> dtype;
      if (!f->dtype.empty()) dtype = model::dtype_from_name(f->dtype, "--dtype");
      const auto r = model::import_hf(f->input, f->out, dtype, parse_size(f->max_shard, "--max-shard-size"));
      for (const auto& note : r.notes) std::printf("note: %s\n", note.c_str());
      std::printf("imported %s to %s: %s; %lld tensors, %s\n", f->input.c_str(), f->out.c_str(),
                  model_line(r.model).c_str(), static_cast<long long>(r.tensors),
                  model::dtype_name(r.dtype).c_str());
      return 0;
    };
  });
}

void register_ckpt_commands(CLI::App& app, Action& action) {
  CLI::App* group = command_group(app, "ckpt", "Inspect checkpoints, runs, bundles and safetensors files");
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = group->add_subcommand(
      "inspect", "Format and version, config, tensors (shape, dtype), parameter counts and file sizes");
  cmd->add_option("path", *path, "Bundle, checkpoint or run directory, Hugging Face directory, or .safetensors file")
      ->required();
  cmd->callback([path, &action] {
    action = [path] {
      inspect(*path);
      return 0;
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("ckpt", register_ckpt_commands);
MOR_REGISTER_COMMANDS("export", register_export_commands);
MOR_REGISTER_COMMANDS("import", register_import_commands);

}  // namespace mor::tools
