// `mor train`: data-parallel pretraining of a MoR model from a typed configuration.
//
// One call runs one rank. Ranks meet through the c10d store (WorldInfo from the environment, or a
// file store in tests); every rank executes the same sequence of collectives. Rank 0 writes the
// run directory: config.yaml, metrics.jsonl, train.log, checkpoints/.
//
// A step: global_batch_size rows from the sharded loader (global_batch / world rows on this
// rank, in micro_batch_size chunks), forward + backward per chunk with the LM loss normalised by
// the step's target count, gradients reduced into the shards after each chunk, global-norm clip,
// AdamW, loss-free bias update. A step whose loss or gradient is not finite is skipped (counted);
// train.max_bad_steps in a row stop the run with an error, the last good checkpoint kept.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/dist/comm.h"

namespace mor::train {

// Fault injection for tests (also settable from the environment, see docs/training.md).
struct Faults {
  std::vector<int64_t> nan_steps;  // steps (1-based) whose loss is replaced by NaN
  int64_t kill_after_step = 0;     // SIGKILL this process after completing this step (0: off)
  int64_t kill_rank = -1;          // ...only on this rank (-1: every rank)
  int64_t kill_in_save_step = 0;   // SIGKILL rank 0 in the middle of saving this step's checkpoint
  int64_t throw_after_step = 0;    // in-process variant of kill_after_step (threads in tests; honours kill_rank)
  int64_t throw_in_save_step = 0;  // in-process variant of kill_in_save_step
};

// Reads MOR_FAULT_NAN_STEPS ("3,4"), MOR_FAULT_KILL_AFTER_STEP ("5" or "RANK:5") and
// MOR_FAULT_KILL_IN_SAVE ("4").
Faults faults_from_env();

struct TrainOptions {
  dist::WorldInfo world;
  std::string file_store;  // non-empty: rendezvous through this file (tests)
  bool resume = true;      // continue from the newest complete checkpoint in train.out_dir
  const std::atomic<bool>* stop = nullptr;  // set by SIGTERM/SIGINT: checkpoint, then stop
  bool console = true;     // rank 0 prints progress and metric lines
  Faults faults;
};

struct TrainResult {
  int64_t start_step = 0;     // step the run resumed from (0: fresh)
  int64_t steps = 0;          // steps completed at the end
  int64_t total_steps = 0;
  int64_t tokens = 0;
  double flops = 0.0;
  int64_t skipped_steps = 0;
  bool interrupted = false;   // stopped by a signal (checkpoint saved)
  std::vector<double> losses;  // LM loss of each step run in this call (identical on every rank)
  double val_loss = 0.0;      // last validation (NaN if none)
  std::string last_checkpoint;
};

// Number of optimizer steps the configured budget allows (steps, tokens or FLOPs).
int64_t budget_steps(const config::Config& config, int64_t world_size);

TrainResult train(const config::Config& config, const TrainOptions& options);

}  // namespace mor::train
