// `mor export`: a training checkpoint (or a run's newest complete one) becomes a serving bundle
// (model/bundle.h), streamed parameter by parameter from the per-rank slices: each tensor is read
// from exactly the element ranges of the rank files that hold it, so the whole model is never in
// memory, let alone twice.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mor/model/bundle.h"

namespace mor::train {

struct ExportResult {
  std::string checkpoint;          // the checkpoint directory that was exported
  int64_t step = 0;                // its step (state.json)
  int64_t tensors = 0;
  int64_t parameters = 0;          // elements written
  std::vector<std::string> notes;  // e.g. no tokenizer found
};

// `checkpoint_or_run_dir`: a checkpoint directory (with COMPLETE) or a run directory (its newest
// complete checkpoint). The model configuration comes from the checkpoint's config.yaml (written as
// mor_config.yaml too), the tokenizer from data.tokenizer when that file exists (BOS/EOS = its
// end-of-text id), the token-choice balancing bias from state.json. `options` supplies dtype and
// shard size; its tokenizer, ids, source, config and bias are filled in here.
// Throws mor::Error naming the directory, file or tensor at fault.
ExportResult export_checkpoint(const std::string& checkpoint_or_run_dir, const std::string& out_dir,
                               model::BundleOptions options);

// The checkpoint `path` denotes: itself when it has COMPLETE, else the newest complete checkpoint
// of the run directory `path`. Throws when it is neither.
std::string resolve_checkpoint(const std::string& path);

// The model a checkpoint (or a run's newest complete one) holds, for evaluation without an export:
// the configuration from config.yaml (returned in `config` when not null), the parameters
// assembled from the rank files, the token-choice balancing bias from state.json.
std::unique_ptr<model::MoRModel> load_checkpoint_model(const std::string& checkpoint_or_run_dir,
                                                       at::ScalarType dtype, at::Device device,
                                                       config::Config* config = nullptr);

}  // namespace mor::train
