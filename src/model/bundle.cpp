// Serving bundles: writing (streamed, sharded, atomic), reading and Hugging Face import.
// See include/mor/model/bundle.h.
#include "mor/model/bundle.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/json_file.h"
#include "mor/io/hf_config.h"

namespace mor::model {

namespace {

using ojson = nlohmann::ordered_json;

constexpr const char* kManifest = "mor_bundle.json";
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

std::string strip_slashes(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

ojson parse_json_file(const std::string& path) {
  MOR_CHECK(core::file_exists(path), path, ": no such file");
  return core::read_json_file<ojson>(path);
}

io::DType io_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return io::DType::kF32;
    case at::kHalf: return io::DType::kF16;
    case at::kBFloat16: return io::DType::kBF16;
    case at::kDouble: return io::DType::kF64;
    default: fail("bundle dtype must be float32, bfloat16, float16 or float64, got ", t);
  }
}

std::optional<at::ScalarType> scalar_type(io::DType t) {
  switch (t) {
    case io::DType::kF32: return at::kFloat;
    case io::DType::kF16: return at::kHalf;
    case io::DType::kBF16: return at::kBFloat16;
    case io::DType::kF64: return at::kDouble;
    case io::DType::kI64: return at::kLong;
    case io::DType::kI32: return at::kInt;
    case io::DType::kI16: return at::kShort;
    case io::DType::kI8: return at::kChar;
    case io::DType::kU8: return at::kByte;
    case io::DType::kBool: return at::kBool;
    default: return std::nullopt;
  }
}

bool is_float(io::DType t) {
  return t == io::DType::kF32 || t == io::DType::kF16 || t == io::DType::kBF16 || t == io::DType::kF64;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string shard_name(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, n);
  return buf;
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

void rename_or_fail(const std::string& from, const std::string& to) {
  MOR_CHECK(std::rename(from.c_str(), to.c_str()) == 0, "cannot rename ", from, " to ", to, ": ",
            std::strerror(errno));
}

// Replaces `dir` by the finished `tmp` directory: the old bundle (if any) is moved aside first, so
// `dir` is always either the old or the new complete bundle.
void commit_directory(const std::string& tmp, const std::string& dir) {
  fsync_directory(tmp);
  const std::string old = dir + ".old";
  core::remove_tree(old);
  const bool replacing = core::is_directory(dir);
  if (replacing) rename_or_fail(dir, old);
  rename_or_fail(tmp, dir);
  fsync_directory(parent_of(dir));
  if (replacing) core::remove_tree(old);
}

// Refuses to replace a directory that holds something other than a bundle.
void check_replaceable(const std::string& dir) {
  if (!core::file_exists(dir) && !core::is_directory(dir)) return;
  MOR_CHECK(core::is_directory(dir), dir, ": exists and is not a directory");
  if (core::file_exists(dir + "/" + kManifest)) return;
  MOR_CHECK(core::list_directory(dir).empty(), dir, ": exists and is not a bundle (no ", kManifest,
            "); refusing to replace it");
}

}  // namespace

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: fail("unsupported model dtype ", dtype);
  }
}

at::ScalarType dtype_from_name(const std::string& name, const std::string& what) {
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16") return at::kHalf;
  if (name == "float64" || name == "fp64") return at::kDouble;
  fail(what, ": unknown dtype '", name, "' (float32, bfloat16, float16 or float64)");
}

at::Tensor read_tensor(const io::SafetensorsReader& reader, const io::TensorInfo& info) {
  const auto type = scalar_type(info.dtype);
  MOR_CHECK(type.has_value(), reader.path(), ": tensor '", info.name, "': dtype ", io::dtype_name(info.dtype),
            " is not supported here");
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(*type));
  const auto bytes = reader.data(info);
  MOR_CHECK(static_cast<int64_t>(bytes.size()) == t.numel() * t.element_size(), reader.path(), ": tensor '",
            info.name, "': ", bytes.size(), " bytes for shape ", shape_text(info.shape));
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

// ---- WeightFiles ----

WeightFiles::WeightFiles(const std::string& dir_in) {
  const std::string dir = strip_slashes(dir_in);
  const std::string index_path = dir + "/" + kIndexFile;
  std::map<std::string, std::string> weight_map;  // tensor -> file (sharded only)
  std::vector<std::string> files;
  if (core::file_exists(index_path)) {
    description_ = index_path;
    const ojson index = parse_json_file(index_path);
    const auto it = index.find("weight_map");
    MOR_CHECK(it != index.end() && it->is_object(), index_path, ": weight_map: missing key (or not an object)");
    for (auto e = it->begin(); e != it->end(); ++e) {
      MOR_CHECK(e.value().is_string(), index_path, ": weight_map: tensor '", e.key(), "': expected a file name");
      const std::string file = e.value().get<std::string>();
      MOR_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..", index_path,
                ": weight_map: tensor '", e.key(), "': file name '", file, "' must name a file in ", dir);
      weight_map[e.key()] = file;
      if (std::find(files.begin(), files.end(), file) == files.end()) files.push_back(file);
    }
    std::sort(files.begin(), files.end());
    MOR_CHECK(!files.empty(), index_path, ": weight_map is empty");
  } else {
    description_ = dir + "/" + kSingleFile;
    MOR_CHECK(core::file_exists(description_), dir, ": no ", kSingleFile, " and no ", kIndexFile);
    files.push_back(kSingleFile);
  }
  readers_.reserve(files.size());
  for (const auto& f : files) {
    const std::string path = dir + "/" + f;
    MOR_CHECK(core::file_exists(path), description_, ": lists ", f, ", which does not exist");
    readers_.emplace_back(path);
  }
  std::map<std::string, Entry> entries;
  for (const auto& reader : readers_) {
    for (const auto& info : reader.tensors()) {
      if (!weight_map.empty()) {
        const auto it = weight_map.find(info.name);
        MOR_CHECK(it != weight_map.end(), reader.path(), ": tensor '", info.name, "' is not in ", description_);
        MOR_CHECK(dir + "/" + it->second == reader.path(), reader.path(), ": tensor '", info.name, "' is mapped to ",
                  it->second, " in ", description_);
      }
      const auto [pos, inserted] = entries.emplace(info.name, Entry{&reader, &info});
      MOR_CHECK(inserted, reader.path(), ": tensor '", info.name, "' also appears in ", pos->second.reader->path());
      names_.push_back(info.name);
    }
  }
  for (const auto& [name, file] : weight_map) {
    MOR_CHECK(entries.count(name), description_, ": tensor '", name, "' is mapped to ", file,
              ", which does not hold it");
  }
  entries_.assign(entries.begin(), entries.end());
}

const WeightFiles::Entry* WeightFiles::find(const std::string& name) const {
  const auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                                   [](const auto& e, const std::string& n) { return e.first < n; });
  return it != entries_.end() && it->first == name ? &it->second : nullptr;
}

// ---- writing ----

namespace {
// Everything of a bundle, into the temporary directory `tmp`.
void write_bundle_files(const std::string& tmp, const config::ModelConfig& model_config,
                        const std::vector<NamedParam>& params, const TensorSource& source,
                        const BundleOptions& options);
}  // namespace

void write_bundle(const std::string& dir_in, const config::ModelConfig& model_config,
                  const std::vector<NamedParam>& params, const TensorSource& source, const BundleOptions& options) {
  const std::string dir = strip_slashes(dir_in);
  MOR_CHECK(!dir.empty(), "bundle directory: empty path");
  MOR_CHECK(options.max_shard_bytes > 0, "max shard size must be positive, got ", options.max_shard_bytes);
  io_dtype(options.dtype);  // a supported dtype, checked before anything is written
  if (!options.tokenizer_json.empty())
    MOR_CHECK(core::file_exists(options.tokenizer_json), options.tokenizer_json, ": no such tokenizer file");
  check_replaceable(dir);
  const std::string tmp = dir + ".tmp";
  core::remove_tree(tmp);
  core::make_directories(tmp);
  try {
    write_bundle_files(tmp, model_config, params, source, options);
  } catch (...) {
    try {
      core::remove_tree(tmp);
    } catch (const Error&) {
    }
    throw;
  }
  commit_directory(tmp, dir);
}

namespace {

void write_bundle_files(const std::string& tmp, const config::ModelConfig& model_config,
                        const std::vector<NamedParam>& params, const TensorSource& source,
                        const BundleOptions& options) {
  const io::DType dtype = io_dtype(options.dtype);

  // Shards: consecutive parameters, a new file when the next tensor would pass the limit.
  std::vector<std::vector<size_t>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t bytes = params[i].tensor.numel() * io::dtype_size(dtype);
    if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  std::vector<std::string> files;
  for (size_t k = 0; k < shards.size(); ++k) files.push_back(shards.size() == 1 ? kSingleFile : shard_name(k, shards.size()));

  for (size_t k = 0; k < shards.size(); ++k) {
    io::SafetensorsWriter writer(tmp + "/" + files[k]);
    writer.set_metadata({{"format", "pt"}});
    for (size_t i : shards[k]) writer.declare(params[i].name, dtype, params[i].tensor.sizes().vec());
    writer.begin();
    for (size_t i : shards[k]) {
      const NamedParam& p = params[i];
      at::Tensor t = source(p);
      MOR_CHECK(t.defined() && t.sizes() == p.tensor.sizes(), "tensor '", p.name, "': the source gave shape ",
                t.defined() ? shape_text(t.sizes().vec()) : "(none)", ", expected ",
                shape_text(p.tensor.sizes().vec()));
      MOR_CHECK(at::isFloatingType(t.scalar_type()), "tensor '", p.name, "': the source gave dtype ",
                t.scalar_type(), ", expected a floating type");
      t = t.to(at::kCPU, options.dtype).contiguous();
      writer.write(p.name, {static_cast<const std::byte*>(t.data_ptr()), static_cast<size_t>(t.nbytes())});
    }
    writer.finish(true);
  }
  if (shards.size() > 1) {
    ojson index;
    index["metadata"] = {{"total_size", total_bytes}};
    ojson map = ojson::object();
    for (size_t k = 0; k < shards.size(); ++k)
      for (size_t i : shards[k]) map[params[i].name] = files[k];
    index["weight_map"] = map;
    core::atomic_write(tmp + "/" + kIndexFile, index.dump(2) + "\n");
  }

  io::HfConfigExtras extras;
  extras.bos_token_id = options.bos_token_id;
  extras.eos_token_id = options.eos_token_id;
  extras.torch_dtype = dtype_name(options.dtype);
  core::atomic_write(tmp + "/config.json", io::hf_config_json(model_config, extras));
  ojson gen;
  gen["bos_token_id"] = options.bos_token_id ? ojson(*options.bos_token_id) : ojson(nullptr);
  gen["eos_token_id"] = options.eos_token_id ? ojson(*options.eos_token_id) : ojson(nullptr);
  gen["max_length"] = model_config.max_seq_len;
  core::atomic_write(tmp + "/generation_config.json", gen.dump(2) + "\n");
  if (options.full_config != nullptr) core::atomic_write(tmp + "/mor_config.yaml", config::dump_yaml(*options.full_config));
  if (!options.tokenizer_json.empty())
    core::atomic_write(tmp + "/tokenizer.json", core::read_file(options.tokenizer_json));

  ojson manifest;
  manifest["format"] = "mor-bundle";
  manifest["format_version"] = kBundleFormatVersion;
  manifest["mor_version"] = MOR_VERSION;
  manifest["dtype"] = dtype_name(options.dtype);
  manifest["source"] = options.source;
  manifest["files"] = files;
  if (!options.balance_bias.empty()) manifest["balance_bias"] = options.balance_bias;
  core::atomic_write(tmp + "/" + kManifest, manifest.dump(2) + "\n");
}

}  // namespace

void save_bundle(const MoRModel& model, const std::string& dir, const BundleOptions& options_in) {
  BundleOptions options = options_in;
  const at::Tensor& bias = model.balance_bias();
  if (options.balance_bias.empty() && bias.defined() && model.config().router.kind == config::RouterKind::kToken) {
    const at::Tensor b = bias.to(at::kCPU, at::kDouble).contiguous();
    options.balance_bias.assign(b.data_ptr<double>(), b.data_ptr<double>() + b.numel());
  }
  write_bundle(dir, model.config(), model.parameters(),
               [](const NamedParam& p) { return p.tensor.detach().to(at::kCPU); }, options);
}

// ---- reading ----

BundleInfo read_bundle_info(const std::string& dir_in) {
  const std::string dir = strip_slashes(dir_in);
  const std::string path = dir + "/" + kManifest;
  MOR_CHECK(core::file_exists(path), dir, ": not a mor bundle (no ", kManifest,
            "; `mor import hf` converts Hugging Face directories)");
  const ojson m = parse_json_file(path);
  MOR_CHECK(m.is_object(), path, ": expected a JSON object");
  auto get = [&](const char* key, auto fallback_type) {
    using T = decltype(fallback_type);
    const auto it = m.find(key);
    MOR_CHECK(it != m.end(), path, ": ", key, ": missing key");
    try {
      return it->template get<T>();
    } catch (const ojson::exception&) {
      fail(path, ": ", key, ": wrong type (", it->dump(), ")");
    }
  };
  const std::string format = get("format", std::string());
  MOR_CHECK(format == "mor-bundle", path, ": format: '", format, "' is not a mor bundle (expected mor-bundle)");
  BundleInfo info;
  info.format_version = get("format_version", int());
  MOR_CHECK(info.format_version == kBundleFormatVersion, path, ": format_version: bundle format version ",
            info.format_version, " is not supported (this build reads version ", kBundleFormatVersion, ")");
  info.dtype = get("dtype", std::string());
  dtype_from_name(info.dtype, path + ": dtype");
  info.files = get("files", std::vector<std::string>());
  if (m.contains("source")) info.source = get("source", std::string());
  if (m.contains("mor_version")) info.mor_version = get("mor_version", std::string());
  if (m.contains("balance_bias")) info.balance_bias = get("balance_bias", std::vector<double>());
  const io::HfConfigRead hf = io::read_hf_config(dir + "/config.json");
  info.model = hf.model;
  info.bos_token_id = hf.extras.bos_token_id;
  info.eos_token_id = hf.extras.eos_token_id;
  if (core::file_exists(dir + "/tokenizer.json")) info.tokenizer_json = dir + "/tokenizer.json";
  return info;
}

std::unique_ptr<MoRModel> load_bundle(const std::string& dir_in, at::ScalarType dtype, at::Device device) {
  const std::string dir = strip_slashes(dir_in);
  const BundleInfo info = read_bundle_info(dir);
  const io::DType stored = io_dtype(dtype_from_name(info.dtype, dir + "/" + kManifest));
  const WeightFiles weights(dir);
  auto model = std::make_unique<MoRModel>(info.model, dtype, device);
  const auto& params = model->parameters();
  std::set<std::string> names;
  for (const auto& p : params) names.insert(p.name);
  for (const auto& name : weights.names()) {
    MOR_CHECK(names.count(name), weights.find(name)->reader->path(), ": tensor '", name,
              "' is not a parameter of this model (extra tensor)");
  }
  for (const auto& p : params) {
    const WeightFiles::Entry* e = weights.find(p.name);
    MOR_CHECK(e != nullptr, weights.description(), ": tensor '", p.name, "' is missing");
    const auto& path = e->reader->path();
    MOR_CHECK(e->info->shape == p.tensor.sizes().vec(), path, ": tensor '", p.name, "': shape ",
              shape_text(e->info->shape), " does not match the model's ", shape_text(p.tensor.sizes().vec()));
    MOR_CHECK(e->info->dtype == stored, path, ": tensor '", p.name, "': dtype ", io::dtype_name(e->info->dtype),
              " differs from the bundle's ", info.dtype);
  }
  const at::NoGradGuard no_grad;
  for (const auto& p : params) {
    const WeightFiles::Entry* e = weights.find(p.name);
    p.tensor.detach().copy_(read_tensor(*e->reader, *e->info));
  }
  if (!info.balance_bias.empty()) {
    at::Tensor bias = model->balance_bias();
    MOR_CHECK(bias.defined() && bias.numel() == static_cast<int64_t>(info.balance_bias.size()), dir, "/",
              kManifest, ": balance_bias: ", info.balance_bias.size(), " values, the model has ",
              bias.defined() ? bias.numel() : 0);
    bias.copy_(at::tensor(info.balance_bias, at::kDouble).to(bias.options()));
  }
  return model;
}

// ---- import ----

HfImportResult import_hf(const std::string& hf_dir_in, const std::string& out_dir,
                         std::optional<at::ScalarType> dtype, int64_t max_shard_bytes) {
  const std::string hf_dir = strip_slashes(hf_dir_in);
  MOR_CHECK(core::is_directory(hf_dir), hf_dir, ": not a directory");
  const io::HfConfigRead hf = io::read_hf_config(hf_dir + "/config.json");
  HfImportResult result;
  result.model = hf.model;
  if (result.model.name.empty()) {
    const auto slash = hf_dir.find_last_of('/');
    result.model.name = slash == std::string::npos ? hf_dir : hf_dir.substr(slash + 1);
  }
  const WeightFiles weights(hf_dir);
  const MoRModel spec(result.model, at::kFloat, at::kMeta);
  const auto& params = spec.parameters();
  std::set<std::string> names;
  for (const auto& p : params) names.insert(p.name);

  for (const auto& name : weights.names()) {
    if (names.count(name)) continue;
    const std::string& file = weights.find(name)->reader->path();
    if (name == "lm_head.weight" && result.model.tie_embeddings) {
      result.notes.push_back(file + ": dropped lm_head.weight (tie_word_embeddings: true)");
    } else if (core::ends_with(name, ".rotary_emb.inv_freq")) {
      result.notes.push_back(file + ": dropped the RoPE buffer " + name + " (recomputed)");
    } else {
      fail(file, ": tensor '", name, "' is not part of the model config.json describes (extra tensor)");
    }
  }
  std::set<io::DType> dtypes;
  for (const auto& p : params) {
    const WeightFiles::Entry* e = weights.find(p.name);
    MOR_CHECK(e != nullptr, weights.description(), ": tensor '", p.name, "' is missing (config.json expects it)");
    MOR_CHECK(e->info->shape == p.tensor.sizes().vec(), e->reader->path(), ": tensor '", p.name, "': shape ",
              shape_text(e->info->shape), " does not match config.json's ", shape_text(p.tensor.sizes().vec()));
    MOR_CHECK(is_float(e->info->dtype), e->reader->path(), ": tensor '", p.name, "': dtype ",
              io::dtype_name(e->info->dtype), " is not a floating type");
    dtypes.insert(e->info->dtype);
  }
  if (dtype) {
    result.dtype = *dtype;
  } else if (dtypes.size() == 1) {
    result.dtype = *scalar_type(*dtypes.begin());
  } else {
    result.dtype = dtype_from_name(hf.extras.torch_dtype, hf_dir + "/config.json: torch_dtype");
    result.notes.push_back("mixed weight dtypes: stored as " + dtype_name(result.dtype) + " (config.json torch_dtype)");
  }

  BundleOptions options;
  options.dtype = result.dtype;
  options.max_shard_bytes = max_shard_bytes;
  options.bos_token_id = hf.extras.bos_token_id;
  options.eos_token_id = hf.extras.eos_token_id;
  options.source = "hf " + hf_dir;
  if (core::file_exists(hf_dir + "/tokenizer.json")) {
    options.tokenizer_json = hf_dir + "/tokenizer.json";
  } else {
    result.notes.push_back(hf_dir + ": no tokenizer.json; the bundle has no tokenizer");
  }
  write_bundle(out_dir, result.model, params,
               [&](const NamedParam& p) {
                 const WeightFiles::Entry* e = weights.find(p.name);
                 return read_tensor(*e->reader, *e->info);
               },
               options);
  result.tensors = static_cast<int64_t>(params.size());
  return result;
}

}  // namespace mor::model
