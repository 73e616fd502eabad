// Checkpoint -> serving bundle, streamed from the rank files. See include/mor/train/export.h.
#include "mor/train/export.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <map>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/io/safetensors.h"
#include "mor/io/tokenizer.h"
#include "mor/train/checkpoint.h"

namespace mor::train {

namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  MOR_CHECK(core::file_exists(path), path, ": no such file");
  try {
    return json::parse(core::read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
}

template <class T>
T field(const json& j, const char* key, const std::string& file) {
  MOR_CHECK(j.is_object() && j.contains(key), file, ": missing field \"", key, "\"");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail(file, ": field \"", key, "\" has the wrong type");
  }
}

// Where one parameter lives: unit u's flat vector, elements [offset, offset + numel).
struct Location {
  int64_t unit = 0, offset = 0, numel = 0;
};

// One rank file's slice of one unit: elements [begin, begin + info->numel()).
struct Slice {
  const io::SafetensorsReader* reader;
  const io::TensorInfo* info;
  int64_t begin;
};

}  // namespace

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
  const std::string index_path = dir + "/index.json", state_path = dir + "/state.json";
  const json index = read_json(index_path);
  MOR_CHECK(field<std::string>(index, "format", index_path) == "mor-checkpoint", index_path,
            ": format: not a mor checkpoint index");
  const int version = field<int>(index, "format_version", index_path);
  MOR_CHECK(version == kCheckpointFormatVersion, index_path, ": format_version: checkpoint format version ", version,
            " is not supported (this build reads version ", kCheckpointFormatVersion, ")");
  const json state = read_json(state_path);
  result.step = field<int64_t>(state, "step", state_path);

  // The parameters the configuration defines (shapes only), matched against the index.
  const model::MoRModel spec(cfg.model, at::kFloat, at::kMeta);
  std::map<std::string, Location> where;
  const json& units = index.at("units");
  MOR_CHECK(units.is_array(), index_path, ": units: expected a list");
  for (size_t u = 0; u < units.size(); ++u) {
    const int64_t unit_numel = field<int64_t>(units[u], "numel", index_path);
    for (const json& jp : units[u].at("params")) {
      const auto name = field<std::string>(jp, "name", index_path);
      const auto shape = field<std::vector<int64_t>>(jp, "shape", index_path);
      Location loc{static_cast<int64_t>(u), field<int64_t>(jp, "offset", index_path), 1};
      for (int64_t d : shape) loc.numel *= d;
      MOR_CHECK(loc.offset >= 0 && loc.offset + loc.numel <= unit_numel, index_path, ": tensor '", name,
                "': elements [", loc.offset, ", ", loc.offset + loc.numel, ") lie outside unit ", u, " (", unit_numel,
                " values)");
      bool known = false;
      for (const auto& p : spec.parameters()) {
        if (p.name != name) continue;
        known = true;
        MOR_CHECK(p.tensor.sizes().vec() == shape, index_path, ": tensor '", name, "': shape ", at::IntArrayRef(shape),
                  " does not match config.yaml's ", p.tensor.sizes());
      }
      MOR_CHECK(known, index_path, ": tensor '", name, "' is not a parameter of the model config.yaml describes");
      where[name] = loc;
    }
  }
  for (const auto& p : spec.parameters())
    MOR_CHECK(where.count(p.name), index_path, ": tensor '", p.name, "' is missing");

  // Every rank file's slice of every unit.
  const auto files = field<std::vector<std::string>>(index, "files", index_path);
  std::vector<io::SafetensorsReader> readers;
  readers.reserve(files.size());
  for (const auto& f : files) readers.emplace_back(dir + "/" + f);
  std::vector<std::vector<Slice>> slices(units.size());
  for (const auto& reader : readers) {
    for (size_t u = 0; u < units.size(); ++u) {
      const std::string key = std::string("u").append(std::to_string(u));
      const auto it = reader.metadata().find(key + ".begin");
      MOR_CHECK(it != reader.metadata().end(), reader.path(), ": missing metadata ", key, ".begin");
      int64_t begin = -1;
      try {
        begin = std::stoll(it->second);
      } catch (const std::exception&) {
      }
      const io::TensorInfo& info = reader.at(key + ".master");
      MOR_CHECK(info.dtype == io::DType::kF32 && info.shape.size() == 1, reader.path(), ": tensor '", key,
                ".master' must be a 1-D F32 tensor");
      MOR_CHECK(begin >= 0 && begin + info.numel() <= field<int64_t>(units[u], "numel", index_path), reader.path(),
                ": tensor '", key, ".master' (begin ", it->second, ") does not fit unit ", u);
      slices[u].push_back({&reader, &info, begin});
    }
  }

  const model::TensorSource source = [&](const model::NamedParam& p) {
    const Location& loc = where.at(p.name);
    at::Tensor out = at::empty({loc.numel}, at::kFloat);
    int64_t filled = 0;
    for (const Slice& s : slices[loc.unit]) {
      const int64_t a = std::max(loc.offset, s.begin);
      const int64_t b = std::min(loc.offset + loc.numel, s.begin + s.info->numel());
      if (a >= b) continue;
      const auto bytes = s.reader->data(*s.info);
      std::memcpy(static_cast<char*>(out.data_ptr()) + (a - loc.offset) * 4, bytes.data() + (a - s.begin) * 4,
                  static_cast<size_t>(b - a) * 4);
      filled += b - a;
    }
    MOR_CHECK(filled == loc.numel, dir, ": the rank files hold ", filled, " of the ", loc.numel, " values of tensor '",
              p.name, "'");
    result.parameters += loc.numel;
    return out.view(p.tensor.sizes());
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
  if (cfg.model.router.kind == config::RouterKind::kToken && state.contains("balance_bias"))
    options.balance_bias = field<std::vector<double>>(state, "balance_bias", state_path);

  model::write_bundle(out_dir, cfg.model, spec.parameters(), source, options);
  result.tensors = static_cast<int64_t>(spec.parameters().size());
  return result;
}

}  // namespace mor::train
