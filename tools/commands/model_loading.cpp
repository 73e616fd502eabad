// Model loading shared by the inference commands (see model_loading.h). Registers no command.
#include "model_loading.h"

#include <ATen/Context.h>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/model/bundle.h"
#include "mor/train/export.h"

namespace mor::tools {

Placement resolve_placement(const std::string& device, const std::string& dtype) {
  MOR_CHECK(device == "auto" || device == "cpu" || device == "cuda", "--device: '", device,
            "' is not a device (auto | cpu | cuda)");
  Placement p;
  p.cuda = device == "cuda" || (device == "auto" && at::hasCUDA());
  MOR_CHECK(!p.cuda || at::hasCUDA(), "--device cuda: no CUDA device is available");
  p.device = p.cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  p.dtype = dtype == "auto" ? (p.cuda ? at::kBFloat16 : at::kFloat) : model::dtype_from_name(dtype, "--dtype");
  return p;
}

InferenceModel load_inference_model(const std::string& path, const Placement& placement) {
  InferenceModel out;
  if (core::file_exists(path + "/mor_bundle.json")) {
    const model::BundleInfo info = model::read_bundle_info(path);
    out.model = model::load_bundle(path, placement.dtype, placement.device);
    out.kind = "bundle";
    out.tokenizer_path = info.tokenizer_json;
    out.bos = info.bos_token_id;
    out.eos = info.eos_token_id;
    for (const auto& f : info.files) out.weight_files.push_back(path + "/" + f);
    return out;
  }
  std::string dir;
  try {
    dir = train::resolve_checkpoint(path);
  } catch (const Error& e) {
    fail(path, ": not a bundle (no mor_bundle.json), and ", e.what());
  }
  config::Config cfg;
  out.model = train::load_checkpoint_model(dir, placement.dtype, placement.device, &cfg);
  out.kind = "checkpoint";
  out.tokenizer_path = cfg.data.tokenizer;
  for (const auto& f : core::list_directory(dir)) {
    if (core::ends_with(f, ".safetensors")) out.weight_files.push_back(dir + "/" + f);
  }
  return out;
}

}  // namespace mor::tools
