// Loading a model for inference in the `mor` commands (eval, generate, serve, bench): the
// --device / --dtype rule and the bundle-or-checkpoint rule, with one error for a path that is
// neither a bundle nor a checkpoint / run directory.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mor/model/model.h"

namespace mor::tools {

struct Placement {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  bool cuda = false;
};
// --device auto|cpu|cuda (auto: CUDA when available) and --dtype auto|float32|bfloat16|...
// (auto: bfloat16 on CUDA, float32 on CPU); errors name the flag.
Placement resolve_placement(const std::string& device, const std::string& dtype);

struct InferenceModel {
  std::unique_ptr<model::MoRModel> model;
  std::string kind;                       // "bundle" | "checkpoint"
  std::string tokenizer_path;             // the bundle's tokenizer.json / the checkpoint's data.tokenizer
  std::optional<int64_t> bos, eos;        // bundle only
  std::vector<std::string> weight_files;  // the files holding the weights (for digests)
};
// A bundle directory (mor_bundle.json), else a checkpoint or run directory (its newest complete
// checkpoint). Throws "PATH: not a bundle (no mor_bundle.json), and ..." for anything else.
InferenceModel load_inference_model(const std::string& path, const Placement& placement);

}  // namespace mor::tools
