// Sharded checkpoints: per-rank safetensors slices, a JSON index and state, commit protocol,
// pruning, and loading onto any world size. See include/mor/train/checkpoint.h.
#include "mor/train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/json_file.h"
#include "mor/dist/sharded_model.h"
#include "mor/io/safetensors.h"
#include "mor/train/optimizer.h"

namespace mor::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kComplete = "COMPLETE";
const char* kRoleNames[] = {"embedding", "lm_head", "norm", "matmul", "router", "aux_router"};

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::string rank_file(int64_t rank, int64_t world) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank-%05lld-of-%05lld.safetensors", static_cast<long long>(rank),
                static_cast<long long>(world));
  return buf;
}

std::span<const std::byte> bytes_of(const at::Tensor& t) {
  return {static_cast<const std::byte*>(t.data_ptr()), static_cast<size_t>(t.numel() * t.element_size())};
}

void fsync_dir(const std::string& dir) {
  // core::atomic_write fsyncs the directory of the file it writes; a marker write does the same
  // for directories we only renamed into.
  core::atomic_write(dir + "/.sync", "");
  core::remove_file(dir + "/.sync");
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

}  // namespace

std::string checkpoints_root(const std::string& out_dir) { return out_dir + "/checkpoints"; }
std::string checkpoint_path(const std::string& out_dir, int64_t step) {
  return checkpoints_root(out_dir) + "/" + step_name(step);
}

std::vector<std::string> complete_checkpoints(const std::string& out_dir) {
  std::vector<std::string> out;
  const std::string root = checkpoints_root(out_dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) == 0 && entry.is_directory() && fs::exists(entry.path() / kComplete))
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());  // zero-padded step numbers sort numerically
  return out;
}

std::optional<std::string> latest_checkpoint(const std::string& out_dir) {
  auto all = complete_checkpoints(out_dir);
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::string save_checkpoint(dist::ShardedModel& sharded, AdamW& optimizer, const CheckpointState& state,
                            const config::Config& config, const std::string& out_dir, int64_t keep,
                            SaveFault fault) {
  const at::NoGradGuard no_grad;
  dist::Communicator& comm = sharded.comm();
  const int64_t rank = comm.rank(), world = comm.world_size();
  const std::string root = checkpoints_root(out_dir);
  const std::string final_dir = checkpoint_path(out_dir, state.step);
  const std::string tmp_dir = root + "/.tmp-" + step_name(state.step);
  if (rank == 0) {
    core::make_directories(root);
    core::remove_tree(tmp_dir);  // leftovers of an interrupted save
    core::make_directories(tmp_dir);
  }
  comm.barrier();

  // This rank's slices.
  const auto& units = sharded.units();
  io::SafetensorsWriter writer(tmp_dir + "/" + rank_file(rank, world));
  std::map<std::string, std::string> meta{{"format", "mor-checkpoint-shard"},
                                          {"rank", std::to_string(rank)},
                                          {"world_size", std::to_string(world)}};
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t u = 0; u < units.size(); ++u) {
    const int64_t n = units[u].valid();
    const std::string p = "u" + std::to_string(u);
    meta[p + ".begin"] = std::to_string(units[u].shard_begin);
    tensors.emplace_back(p + ".master", units[u].master.narrow(0, 0, n));
    tensors.emplace_back(p + ".exp_avg", optimizer.exp_avg(static_cast<int64_t>(u)).narrow(0, 0, n));
    tensors.emplace_back(p + ".exp_avg_sq", optimizer.exp_avg_sq(static_cast<int64_t>(u)).narrow(0, 0, n));
  }
  tensors.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
  writer.set_metadata(meta);
  for (auto& [name, t] : tensors) {
    t = t.to(at::kCPU).contiguous();
    writer.declare(name, t.scalar_type() == at::kByte ? io::DType::kU8 : io::DType::kF32, {t.numel()});
  }
  writer.begin();
  for (const auto& [name, t] : tensors) writer.write(name, bytes_of(t));
  writer.finish(true);
  comm.barrier();

  if (rank == 0) {
    if (fault) fault(state.step);
    const auto& params = sharded.model().parameters();
    json index;
    index["format"] = "mor-checkpoint";
    index["format_version"] = kCheckpointFormatVersion;
    index["world_size"] = world;
    index["sharding"] = config::to_string(sharded.mode());
    index["units"] = json::array();
    for (const auto& u : units) {
      json ju = {{"name", u.name}, {"numel", u.numel}, {"shard_numel", u.shard_numel}, {"params", json::array()}};
      for (size_t k = 0; k < u.params.size(); ++k) {
        const auto& p = params[u.params[k]];
        ju["params"].push_back({{"name", p.name}, {"shape", p.tensor.sizes().vec()}, {"offset", u.offsets[k]},
                                {"role", kRoleNames[static_cast<int>(p.role)]}});
      }
      index["units"].push_back(ju);
    }
    index["files"] = json::array();
    for (int64_t r = 0; r < world; ++r) index["files"].push_back(rank_file(r, world));
    json st = {{"step", state.step},
               {"optimizer_steps", state.optimizer_steps},
               {"total_steps", state.total_steps},
               {"tokens", state.tokens},
               {"flops", state.flops},
               {"skipped_steps", state.skipped_steps},
               {"loader_cursor", json::parse(state.loader_cursor)},
               {"balance_bias", state.balance_bias},
               {"world_size", world}};
    core::atomic_write(tmp_dir + "/index.json", index.dump(2) + "\n");
    core::atomic_write(tmp_dir + "/state.json", st.dump(2) + "\n");
    core::atomic_write(tmp_dir + "/config.yaml", config::dump_yaml(config));
    core::remove_tree(final_dir);  // an older save of the same step (a resumed run saving again)
    std::error_code ec;
    fs::rename(tmp_dir, final_dir, ec);
    MOR_CHECK(!ec, "cannot rename ", tmp_dir, " to ", final_dir, ": ", ec.message());
    fsync_dir(root);
    core::atomic_write(final_dir + "/" + kComplete, "step " + std::to_string(state.step) + "\n");
    if (keep > 0) {
      auto all = complete_checkpoints(out_dir);
      for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
        // Remove the marker first: a half-deleted directory is never mistaken for a checkpoint.
        core::remove_file(all[i] + "/" + kComplete);
        core::remove_tree(all[i]);
      }
    }
  }
  comm.barrier();
  return final_dir;
}

struct CheckpointReader::Impl {
  std::string dir;
  std::vector<CheckpointUnit> units;
  CheckpointState state;
  std::vector<io::SafetensorsReader> files;
  // Per unit, per file: the first element of the unit held by that file and how many.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> slices;
};

CheckpointReader::CheckpointReader(const std::string& dir) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = dir;
  const std::string index_path = dir + "/index.json", state_path = dir + "/state.json";
  MOR_CHECK(core::file_exists(dir + "/" + kComplete), dir, ": incomplete checkpoint (no ", kComplete, " marker)");
  const json index = core::read_json_file<json>(index_path);
  MOR_CHECK(field<std::string>(index, "format", index_path) == "mor-checkpoint", index_path,
            ": format: not a mor checkpoint index");
  const int version = field<int>(index, "format_version", index_path);
  MOR_CHECK(version == kCheckpointFormatVersion, index_path, ": format_version: checkpoint format version ", version,
            " is not supported (this build reads version ", kCheckpointFormatVersion, ")");
  MOR_CHECK(index.contains("units") && index.at("units").is_array(), index_path, ": units: expected a list");
  for (const json& ju : index.at("units")) {
    CheckpointUnit unit;
    unit.name = field<std::string>(ju, "name", index_path);
    unit.numel = field<int64_t>(ju, "numel", index_path);
    MOR_CHECK(ju.contains("params") && ju.at("params").is_array(), index_path, ": unit ", unit.name,
              ": params: expected a list");
    for (const json& jp : ju.at("params")) {
      CheckpointParam p{field<std::string>(jp, "name", index_path), field<std::vector<int64_t>>(jp, "shape", index_path),
                        field<int64_t>(jp, "offset", index_path), 1};
      for (int64_t d : p.shape) p.numel *= d;
      MOR_CHECK(p.offset >= 0 && p.offset + p.numel <= unit.numel, index_path, ": tensor '", p.name,
                "': elements [", p.offset, ", ", p.offset + p.numel, ") lie outside unit ", unit.name, " (",
                unit.numel, " values)");
      unit.params.push_back(std::move(p));
    }
    m.units.push_back(std::move(unit));
  }

  for (const auto& f : field<std::vector<std::string>>(index, "files", index_path)) m.files.emplace_back(dir + "/" + f);
  m.slices.resize(m.units.size());
  for (size_t u = 0; u < m.units.size(); ++u) {
    const std::string key = "u" + std::to_string(u);
    for (const auto& file : m.files) {
      const auto it = file.metadata().find(key + ".begin");
      MOR_CHECK(it != file.metadata().end(), file.path(), ": missing metadata ", key, ".begin");
      int64_t begin = -1;
      try {
        begin = std::stoll(it->second);
      } catch (const std::exception&) {
      }
      const io::TensorInfo& master = file.at(key + ".master");
      MOR_CHECK(master.dtype == io::DType::kF32 && master.shape.size() == 1, file.path(), ": tensor '", key,
                ".master' must be a 1-D F32 tensor");
      MOR_CHECK(begin >= 0 && begin + master.numel() <= m.units[u].numel, file.path(), ": tensor '", key,
                ".master' (begin ", it->second, ") does not fit unit ", m.units[u].name, " [0, ", m.units[u].numel,
                ")");
      m.slices[u].emplace_back(begin, master.numel());
    }
  }

  const json st = core::read_json_file<json>(state_path);
  CheckpointState& out = m.state;
  out.step = field<int64_t>(st, "step", state_path);
  out.optimizer_steps = field<int64_t>(st, "optimizer_steps", state_path);
  out.total_steps = field<int64_t>(st, "total_steps", state_path);
  out.tokens = field<int64_t>(st, "tokens", state_path);
  out.flops = field<double>(st, "flops", state_path);
  out.skipped_steps = field<int64_t>(st, "skipped_steps", state_path);
  MOR_CHECK(st.contains("loader_cursor"), state_path, ": missing field \"loader_cursor\"");
  out.loader_cursor = st.at("loader_cursor").dump();
  out.balance_bias = field<std::vector<double>>(st, "balance_bias", state_path);
  out.world_size = field<int64_t>(st, "world_size", state_path);
}

CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader::~CheckpointReader() = default;
const std::string& CheckpointReader::dir() const { return impl_->dir; }
const std::vector<CheckpointUnit>& CheckpointReader::units() const { return impl_->units; }
const CheckpointState& CheckpointReader::state() const { return impl_->state; }

void CheckpointReader::read(int64_t unit, const std::string& which, int64_t begin, int64_t count, float* dst) const {
  const Impl& m = *impl_;
  MOR_CHECK(unit >= 0 && unit < static_cast<int64_t>(m.units.size()), m.dir, ": no unit ", unit);
  const std::string name = "u" + std::to_string(unit) + "." + which;
  int64_t filled = 0;
  for (size_t f = 0; f < m.files.size(); ++f) {
    const auto [fbegin, n] = m.slices[unit][f];
    const int64_t a = std::max(begin, fbegin), b = std::min(begin + count, fbegin + n);
    if (a >= b) continue;
    const io::TensorInfo& info = m.files[f].at(name);
    MOR_CHECK(info.dtype == io::DType::kF32 && info.numel() == n, m.files[f].path(), ": tensor '", name,
              "' must be F32 with ", n, " elements");
    const auto bytes = m.files[f].data(info);
    std::memcpy(dst + (a - begin), bytes.data() + (a - fbegin) * 4, static_cast<size_t>(b - a) * 4);
    filled += b - a;
  }
  MOR_CHECK(filled == count, m.dir, ": the rank files cover ", filled, " of the ", count, " values [", begin, ", ",
            begin + count, ") of unit ", m.units[unit].name);
}

at::Tensor CheckpointReader::rng_state(int64_t rank) const {
  const Impl& m = *impl_;
  if (m.files.empty()) return {};
  const auto& file = m.files[static_cast<size_t>(rank) < m.files.size() ? static_cast<size_t>(rank) : 0];
  const io::TensorInfo* rng = file.find("rng.cpu");
  if (rng == nullptr) return {};
  const auto bytes = file.data(*rng);
  at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(state.data_ptr(), bytes.data(), bytes.size());
  return state;
}

std::vector<std::pair<std::string, at::Tensor>> load_consolidated(const std::string& dir) {
  const CheckpointReader reader(dir);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t u = 0; u < reader.units().size(); ++u) {
    for (const CheckpointParam& p : reader.units()[u].params) {
      at::Tensor t = at::empty(p.shape, at::kFloat);
      reader.read(static_cast<int64_t>(u), "master", p.offset, p.numel, t.data_ptr<float>());
      out.emplace_back(p.name, t);
    }
  }
  return out;
}

config::Config checkpoint_config(const std::string& dir) {
  const std::string path = dir + "/config.yaml";
  MOR_CHECK(core::file_exists(path), dir, ": not a checkpoint (no config.yaml)");
  return config::load({path});
}

CheckpointState load_checkpoint(const std::string& dir, dist::ShardedModel& sharded, AdamW& optimizer) {
  const at::NoGradGuard no_grad;
  const CheckpointReader reader(dir);
  const std::string index_path = dir + "/index.json";

  // The layout must match the model being restored.
  auto& units = sharded.units();
  const auto& params = sharded.model().parameters();
  const auto& saved = reader.units();
  MOR_CHECK(saved.size() == units.size(), index_path, ": ", saved.size(), " parameter units, the model has ",
            units.size());
  for (size_t u = 0; u < units.size(); ++u) {
    MOR_CHECK(saved[u].name == units[u].name && saved[u].numel == units[u].numel, index_path, ": unit ", u, " is ",
              saved[u].name, " with ", saved[u].numel, " values, the model's is ", units[u].name, " with ",
              units[u].numel);
    MOR_CHECK(saved[u].params.size() == units[u].params.size(), index_path, ": unit ", units[u].name, " lists ",
              saved[u].params.size(), " tensors, the model has ", units[u].params.size());
    for (size_t k = 0; k < saved[u].params.size(); ++k) {
      const auto& p = params[units[u].params[k]];
      MOR_CHECK(saved[u].params[k].name == p.name && saved[u].params[k].shape == p.tensor.sizes().vec(), index_path,
                ": tensor ", saved[u].params[k].name, " does not match the model's ", p.name, " ", p.tensor.sizes());
    }
  }

  // This rank's elements of every unit: masters and AdamW moments.
  for (size_t u = 0; u < units.size(); ++u) {
    const int64_t n = units[u].valid();
    auto restore = [&](const char* which, at::Tensor& dst) {
      at::Tensor values = at::empty({n}, at::kFloat);
      reader.read(static_cast<int64_t>(u), which, units[u].shard_begin, n, values.data_ptr<float>());
      dst.narrow(0, 0, n).copy_(values);
    };
    restore("master", units[u].master);
    restore("exp_avg", optimizer.exp_avg(static_cast<int64_t>(u)));
    restore("exp_avg_sq", optimizer.exp_avg_sq(static_cast<int64_t>(u)));
  }
  // RNG: this rank's own state when the world size matches, else rank 0's.
  if (const at::Tensor rng = reader.rng_state(sharded.comm().rank()); rng.defined()) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(rng);
  }
  optimizer.set_steps(reader.state().optimizer_steps);
  return reader.state();
}

}  // namespace mor::train
