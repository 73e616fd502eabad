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

json parse_json_file(const std::string& path) {
  const std::string text = core::read_file(path);
  try {
    return json::parse(text);
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

std::vector<std::pair<std::string, at::Tensor>> load_consolidated(const std::string& dir) {
  const std::string index_path = dir + "/index.json";
  MOR_CHECK(core::file_exists(dir + "/" + kComplete), dir, ": incomplete checkpoint (no ", kComplete, " marker)");
  const json index = parse_json_file(index_path);
  const auto files = field<std::vector<std::string>>(index, "files", index_path);
  std::vector<io::SafetensorsReader> readers;
  for (const auto& f : files) readers.emplace_back(dir + "/" + f);
  std::vector<std::pair<std::string, at::Tensor>> out;
  const json& junits = index.at("units");
  for (size_t u = 0; u < junits.size(); ++u) {
    const std::string p = "u" + std::to_string(u);
    const int64_t numel = field<int64_t>(junits[u], "numel", index_path);
    at::Tensor flat = at::empty({numel}, at::kFloat);
    int64_t filled = 0;
    for (const auto& reader : readers) {
      const auto it = reader.metadata().find(p + ".begin");
      MOR_CHECK(it != reader.metadata().end(), reader.path(), ": missing metadata ", p, ".begin");
      const int64_t begin = std::stoll(it->second);
      const io::TensorInfo& info = reader.at(p + ".master");
      MOR_CHECK(info.dtype == io::DType::kF32 && begin >= 0 && begin + info.numel() <= numel, reader.path(),
                ": tensor ", p, ".master does not fit unit ", u);
      const auto bytes = reader.data(info);
      std::memcpy(static_cast<char*>(flat.data_ptr()) + begin * 4, bytes.data(), bytes.size());
      filled += info.numel();
    }
    MOR_CHECK(filled == numel, dir, ": rank files hold ", filled, " of the ", numel, " values of unit ", u);
    for (const json& jp : junits[u].at("params")) {
      const auto shape = field<std::vector<int64_t>>(jp, "shape", index_path);
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      out.emplace_back(field<std::string>(jp, "name", index_path),
                       flat.narrow(0, field<int64_t>(jp, "offset", index_path), n).view(shape).clone());
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
  const std::string index_path = dir + "/index.json", state_path = dir + "/state.json";
  MOR_CHECK(core::file_exists(dir + "/" + kComplete), dir, ": incomplete checkpoint (no ", kComplete, " marker)");
  const json index = parse_json_file(index_path);
  MOR_CHECK(field<std::string>(index, "format", index_path) == "mor-checkpoint", index_path,
            ": not a mor checkpoint index");
  const int version = field<int>(index, "format_version", index_path);
  MOR_CHECK(version == kCheckpointFormatVersion, index_path, ": checkpoint format version ", version,
            " is not supported (this build reads version ", kCheckpointFormatVersion, ")");

  // The layout must match the model being restored.
  auto& units = sharded.units();
  const auto& params = sharded.model().parameters();
  const json& junits = index.at("units");
  MOR_CHECK(junits.is_array() && junits.size() == units.size(), index_path, ": ", junits.size(),
            " parameter units, the model has ", units.size());
  for (size_t u = 0; u < units.size(); ++u) {
    const json& ju = junits[u];
    MOR_CHECK(field<std::string>(ju, "name", index_path) == units[u].name &&
                  field<int64_t>(ju, "numel", index_path) == units[u].numel,
              index_path, ": unit ", u, " is ", ju.value("name", "?"), " with ", ju.value("numel", int64_t{0}),
              " values, the model's is ", units[u].name, " with ", units[u].numel);
    const json& jp = ju.at("params");
    MOR_CHECK(jp.size() == units[u].params.size(), index_path, ": unit ", units[u].name, " lists ", jp.size(),
              " tensors, the model has ", units[u].params.size());
    for (size_t k = 0; k < jp.size(); ++k) {
      const auto& p = params[units[u].params[k]];
      const auto shape = field<std::vector<int64_t>>(jp[k], "shape", index_path);
      MOR_CHECK(field<std::string>(jp[k], "name", index_path) == p.name && shape == p.tensor.sizes().vec(),
                index_path, ": tensor ", jp[k].value("name", "?"), " does not match the model's ", p.name, " ",
                p.tensor.sizes());
    }
  }

  // Open every rank file and collect which element ranges each holds.
  const auto files = field<std::vector<std::string>>(index, "files", index_path);
  std::vector<io::SafetensorsReader> readers;
  for (const auto& f : files) readers.emplace_back(dir + "/" + f);
  const int64_t rank = sharded.comm().rank();
  for (size_t u = 0; u < units.size(); ++u) {
    const std::string p = "u" + std::to_string(u);
    const int64_t lo = units[u].shard_begin, hi = lo + units[u].valid();
    int64_t filled = 0;
    for (const auto& reader : readers) {
      const auto it = reader.metadata().find(p + ".begin");
      MOR_CHECK(it != reader.metadata().end(), reader.path(), ": missing metadata ", p, ".begin");
      const int64_t fbegin = std::stoll(it->second);
      const io::TensorInfo& master = reader.at(p + ".master");
      MOR_CHECK(master.dtype == io::DType::kF32 && master.shape.size() == 1, reader.path(), ": tensor ", p,
                ".master must be a 1-D F32 tensor");
      const int64_t fend = fbegin + master.numel();
      MOR_CHECK(fbegin >= 0 && fend <= units[u].numel, reader.path(), ": tensor ", p, ".master covers [", fbegin,
                ", ", fend, ") outside unit ", units[u].name, " [0, ", units[u].numel, ")");
      const int64_t a = std::max(lo, fbegin), b = std::min(hi, fend);
      if (a >= b) continue;
      auto copy = [&](const std::string& name, at::Tensor& dst) {
        const io::TensorInfo& info = reader.at(name);
        MOR_CHECK(info.dtype == io::DType::kF32 && info.numel() == master.numel(), reader.path(), ": tensor ", name,
                  " must be F32 with ", master.numel(), " elements");
        const auto bytes = reader.data(info);
        at::Tensor src = at::empty({b - a}, at::kFloat);
        std::memcpy(src.data_ptr(), bytes.data() + (a - fbegin) * 4, static_cast<size_t>(b - a) * 4);
        dst.narrow(0, a - lo, b - a).copy_(src);
      };
      copy(p + ".master", units[u].master);
      copy(p + ".exp_avg", optimizer.exp_avg(static_cast<int64_t>(u)));
      copy(p + ".exp_avg_sq", optimizer.exp_avg_sq(static_cast<int64_t>(u)));
      filled += b - a;
    }
    MOR_CHECK(filled == hi - lo, dir, ": the rank files cover ", filled, " of the ", hi - lo,
              " values rank ", rank, " needs for unit ", units[u].name);
  }
  // RNG: this rank's own state when the world size matches, else rank 0's.
  const size_t rng_file = static_cast<size_t>(rank) < readers.size() ? static_cast<size_t>(rank) : 0;
  if (const io::TensorInfo* rng = readers[rng_file].find("rng.cpu")) {
    const auto bytes = readers[rng_file].data(*rng);
    at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
    std::memcpy(state.data_ptr(), bytes.data(), bytes.size());
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(state);
  }

  const json st = parse_json_file(state_path);
  CheckpointState out;
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
  optimizer.set_steps(out.optimizer_steps);
  return out;
}

}  // namespace mor::train
