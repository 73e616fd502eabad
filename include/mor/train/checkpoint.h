// Sharded training checkpoints.
//
// Layout: <out_dir>/checkpoints/step-<8 digits>/
//   rank-<r>-of-<W>.safetensors  this rank's fp32 slice of every unit: u<k>.master, u<k>.exp_avg,
//                                u<k>.exp_avg_sq (elements [begin, begin + n) of the unit's flat
//                                vector; begin in the metadata "u<k>.begin"), and rng.cpu
//   index.json                   global layout: units, their parameters (name, shape, offset,
//                                role), world size, and each file's ranges
//   state.json                   step, optimizer steps, tokens, FLOPs, skipped steps, loader
//                                cursor, loss-free balancing bias
//   config.yaml                  the resolved configuration
//   COMPLETE                     written last: only directories with it are loaded
// Writing: every rank writes its file into .tmp-step-<N> (temporary name, fsync, rename), a
// barrier, then rank 0 writes the index, state and config, renames the directory and writes
// COMPLETE (fsync at each stage). A run killed at any point leaves the previous checkpoint loadable.
// Loading reads only the element ranges this rank owns, from whichever files hold them, so a
// checkpoint loads onto any number of ranks and any sharding mode.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "mor/config/config.h"

namespace mor::dist {
class ShardedModel;
}

namespace mor::train {

class AdamW;

inline constexpr int kCheckpointFormatVersion = 1;

struct CheckpointState {
  int64_t step = 0;             // optimizer steps taken (including skipped ones)
  int64_t optimizer_steps = 0;  // AdamW updates applied (bias correction)
  int64_t total_steps = 0;
  int64_t tokens = 0;
  double flops = 0.0;
  int64_t skipped_steps = 0;
  std::string loader_cursor;    // data::cursor_to_json
  std::vector<double> balance_bias;  // token-choice loss-free bias
  int64_t world_size = 1;
};

std::string checkpoints_root(const std::string& out_dir);
std::string checkpoint_path(const std::string& out_dir, int64_t step);
// Complete checkpoints of a run, oldest first.
std::vector<std::string> complete_checkpoints(const std::string& out_dir);
std::optional<std::string> latest_checkpoint(const std::string& out_dir);

// Test hook: called on rank 0 after the rank files are written and before the directory is
// committed (a crash here must leave the previous checkpoint as the latest).
using SaveFault = std::function<void(int64_t step)>;

// Collective. Returns the committed directory. keep > 0 prunes older complete checkpoints.
std::string save_checkpoint(dist::ShardedModel& model, AdamW& optimizer, const CheckpointState& state,
                            const config::Config& config, const std::string& out_dir, int64_t keep,
                            SaveFault fault = nullptr);

// Collective. Restores master shards, optimizer moments and RNG into `model`/`optimizer` (whose
// layout must match the configuration the checkpoint was written with) and returns the state.
// Throws mor::Error naming the file and tensor/field at fault.
CheckpointState load_checkpoint(const std::string& dir, dist::ShardedModel& model, AdamW& optimizer);

// Read access to one complete checkpoint, for every consumer (resume, export, inspection):
// checks COMPLETE, the index's format and version, and each rank file's slice of each unit on
// open; read() copies any element range of a unit's flat vector from whichever files hold it.
// Every failure is a mor::Error naming the directory, file and tensor.
struct CheckpointParam {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // first element in the unit's flat vector
  int64_t numel = 0;
};
struct CheckpointUnit {
  std::string name;
  int64_t numel = 0;
  std::vector<CheckpointParam> params;
};

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& dir);
  CheckpointReader(CheckpointReader&&) noexcept;
  ~CheckpointReader();

  const std::string& dir() const;
  const std::vector<CheckpointUnit>& units() const;
  const CheckpointState& state() const;  // state.json
  // dst[0, count) <- elements [begin, begin + count) of unit `unit`'s vector `which` ("master",
  // "exp_avg" or "exp_avg_sq"); throws unless the rank files cover the whole range.
  void read(int64_t unit, const std::string& which, int64_t begin, int64_t count, float* dst) const;
  // The CPU generator state saved by `rank` (rank 0's when there is no such file); undefined if none.
  at::Tensor rng_state(int64_t rank) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every parameter's full fp32 value (name -> tensor), assembled from all rank files of a complete
// checkpoint in one process (no communicator): export, inspection, tests.
std::vector<std::pair<std::string, at::Tensor>> load_consolidated(const std::string& dir);

// The configuration stored with a checkpoint (config.yaml).
config::Config checkpoint_config(const std::string& dir);

}  // namespace mor::train
