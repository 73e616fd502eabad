// Serving bundles: a directory a model can be loaded from without its training run.
//
//   mor_bundle.json           {"format": "mor-bundle", "format_version": 1, "mor_version": ...,
//                              "dtype": "float32"|"bfloat16"|..., "source": ..., "files": [...]}
//   config.json               io::hf_config_json (Llama keys + "mor" section)
//   mor_config.yaml           the resolved mor configuration the model came from (when known)
//   model.safetensors         every parameter by its Hugging Face name (lm_head.weight omitted when
//                             tied); above BundleOptions::max_shard_bytes: model-00001-of-0000N
//                             .safetensors ... plus model.safetensors.index.json
//                             {"metadata": {"total_size": N}, "weight_map": {name: file}}
//   tokenizer.json            copied when given
//   generation_config.json    {"bos_token_id", "eos_token_id", "max_length"}
// Token-choice models with loss-free balancing also store their routing bias in mor_bundle.json
// ("balance_bias": [N_r numbers]); it changes which depth tokens take.
// Every safetensors file carries the metadata {"format": "pt"} transformers expects.
// Loading refuses an unknown format / format_version, and missing, extra or mis-shaped tensors,
// with errors naming the file and the tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/io/safetensors.h"
#include "mor/model/model.h"

namespace mor::model {

inline constexpr int kBundleFormatVersion = 1;

struct BundleOptions {
  std::string tokenizer_json;          // path of a tokenizer.json to copy ("" : none)
  std::optional<int64_t> bos_token_id, eos_token_id;
  at::ScalarType dtype = at::kFloat;   // dtype of the stored weights
  int64_t max_shard_bytes = 5LL << 30; // split model.safetensors above this size
  std::string source;                  // free text: "checkpoint runs/x/checkpoints/step-100", "hf DIR", ...
  const config::Config* full_config = nullptr;  // written as mor_config.yaml when set
  std::vector<double> balance_bias;    // token-choice loss-free bias (MoRModel::balance_bias()); empty: none
};

// A source of parameter values, one tensor at a time (name, HF order as MoRModel::parameters()),
// so writers never need the whole model twice in memory. Returns a CPU tensor of the parameter's
// shape (any floating dtype; converted to BundleOptions::dtype).
using TensorSource = std::function<at::Tensor(const NamedParam& param)>;

// Writes a bundle for `model_config` into `dir` (created; an existing bundle there is replaced
// atomically: written to "<dir>.tmp", then renamed). `params` lists the parameters (names, shapes,
// roles) as a MoRModel built from `model_config` would.
void write_bundle(const std::string& dir, const config::ModelConfig& model_config,
                  const std::vector<NamedParam>& params, const TensorSource& source, const BundleOptions& options);
// Convenience: the model's own values.
void save_bundle(const MoRModel& model, const std::string& dir, const BundleOptions& options);

struct BundleInfo {
  int format_version = 0;
  std::string dtype;
  config::ModelConfig model;
  std::optional<int64_t> bos_token_id, eos_token_id;
  std::string tokenizer_json;  // path inside the bundle, "" when absent
  std::string source, mor_version;
  std::vector<double> balance_bias;
  std::vector<std::string> files;  // the weight files, as listed in mor_bundle.json
};
// Reads mor_bundle.json and config.json (refusing unknown formats/versions).
BundleInfo read_bundle_info(const std::string& dir);

// Builds the model and loads every tensor (checked by name and shape), in `dtype` on `device`.
std::unique_ptr<MoRModel> load_bundle(const std::string& dir, at::ScalarType dtype = at::kFloat,
                                      at::Device device = at::kCPU);

// "float32" | "bfloat16" | "float16" | "float64" <-> dtype; an unknown name is a mor::Error naming
// `what` (e.g. "--dtype").
std::string dtype_name(at::ScalarType dtype);
at::ScalarType dtype_from_name(const std::string& name, const std::string& what);

// The weights of a directory: model.safetensors, or the shards listed by
// model.safetensors.index.json (every listed file must exist and hold the tensors mapped to it).
class WeightFiles {
 public:
  explicit WeightFiles(const std::string& dir);
  struct Entry {
    const io::SafetensorsReader* reader;
    const io::TensorInfo* info;
  };
  // Every tensor name, file by file in file order, each file's tensors by offset.
  const std::vector<std::string>& names() const { return names_; }
  const Entry* find(const std::string& name) const;  // nullptr when absent
  const std::vector<io::SafetensorsReader>& readers() const { return readers_; }
  // The file a missing tensor should have been in (model.safetensors or the index).
  const std::string& description() const { return description_; }

 private:
  std::vector<io::SafetensorsReader> readers_;
  std::vector<std::string> names_;
  std::vector<std::pair<std::string, Entry>> entries_;  // sorted by name
  std::string description_;
};

// A tensor's values as a CPU tensor of its own dtype (copied out of the mapping).
at::Tensor read_tensor(const io::SafetensorsReader& reader, const io::TensorInfo& info);

// `mor import hf`: a Hugging Face Llama-family directory (config.json, model.safetensors or shards
// with an index, tokenizer.json when present) becomes a bundle with the same tensors. `dtype`
// unset keeps the weights' own dtype (bit-identical copies). Tensors are checked by name and shape
// against the configuration; lm_head.weight of a tied model and rotary_emb.inv_freq buffers are
// dropped. Throws mor::Error naming the file and the tensor or key.
struct HfImportResult {
  config::ModelConfig model;
  at::ScalarType dtype = at::kFloat;
  int64_t tensors = 0;
  std::vector<std::string> notes;  // things dropped or defaulted, for the user
};
HfImportResult import_hf(const std::string& hf_dir, const std::string& out_dir,
                         std::optional<at::ScalarType> dtype = std::nullopt,
                         int64_t max_shard_bytes = BundleOptions{}.max_shard_bytes);

}  // namespace mor::model
