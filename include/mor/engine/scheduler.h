// The request scheduler of the inference engine (vLLM-v1 style: the scheduler owns the KV blocks;
// an engine step = plan -> run -> complete). Continuous batching: requests join while others
// decode; prompts are prefilled in chunks under a per-step token budget; when KV blocks run out,
// the most recently admitted running sequences are preempted and later recomputed (their prompt and
// generated tokens are prefilled again); the waiting queue is bounded. Torch-free, not thread-safe.
//
// plan():
//   1. Running sequences, oldest first: each gets its pending tokens (1 when decoding; the rest of
//      its prefill otherwise, cut to the remaining budget). If the KV demand of an item does not fit
//      in the free blocks, the newest running sequence is preempted (its blocks released, computed
//      reset to 0, moved to the front of the waiting queue) and the check repeats; a sequence that
//      would have to preempt itself is preempted instead.
//   2. Waiting sequences, first come first served, while running < max_running, budget remains and
//      their first chunk's KV demand fits. Nothing is skipped: a waiting sequence that does not fit
//      blocks the ones behind it (no starvation of long prompts).
//      Step 2 is skipped in a step that preempted anything (memory is tight; a sequence preempted
//      now is not re-admitted in the same step).
//   Sum of item counts <= max_batch_tokens; every running sequence gets at most one item per step.
//   A sequence that cannot fit its item although it holds every used block (running), or its first
//   chunk although the whole pool is free (waiting head), can never make progress: it is finished
//   where it stands (finish reason "length") and listed in StepPlan::finished, so plan() never
//   livelocks. With a worst-case demand this happens only when prompt + generated tokens outgrow
//   the pool (a fresh prompt that fits the pool gets at least its first token).
// Finished sequences stay readable (sequence(id)) until abort(id) drops them. Ids must be >= 0.
// KV demand is the caller's worst case (e.g. every cache slot of every new token); the runner then
// appends what it really writes (<= the demand), so a planned step never runs out of blocks.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "mor/engine/kv_blocks.h"

namespace mor::engine {

struct SchedulerConfig {
  int64_t max_batch_tokens = 2048;  // tokens computed per step (prefill chunks + decode tokens)
  int64_t max_running = 64;         // sequences holding KV at once
  int64_t max_queue = 256;          // waiting sequences; more are refused
};

// Worst-case new blocks for sequence `seq` computing `n` more tokens (given its current KV).
using KvDemand = std::function<int64_t(const KvBlockManager& kv, int64_t seq, int64_t n)>;

enum class SeqStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int64_t prompt_len = 0;
  int64_t max_new_tokens = 0;
  int64_t computed = 0;         // leading tokens whose K/V are in the cache
  int64_t generated = 0;
  int64_t preemptions = 0;
  SeqStatus status = SeqStatus::kWaiting;
};

// Compute tokens [begin, begin + count) of `seq`; when they reach the end of its tokens the runner
// samples the next token (samples == true).
struct StepItem {
  int64_t seq = 0;
  int64_t begin = 0;
  int64_t count = 0;
  bool samples = false;
};

struct StepPlan {
  std::vector<StepItem> items;
  std::vector<int64_t> preempted;  // sequences preempted while planning this step
  std::vector<int64_t> finished;   // sequences finished while planning (outgrew the KV pool)
  int64_t tokens = 0;              // sum of item counts
  bool empty() const { return items.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, KvBlockManager& kv, KvDemand demand);

  enum class Admit { kQueued, kQueueFull, kTooLong };
  // kTooLong: the prompt alone needs more blocks than the whole pool (it could never run).
  // kQueueFull: max_queue sequences are waiting. mor::Error for a known id (finished ones too, until
  // aborted), a negative id, an empty prompt or max_new_tokens < 1.
  Admit add(int64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens);

  StepPlan plan();
  // Depth-wise batching: sequences in `in_flight` (id -> worst-case blocks their unfinished item may
  // still append) are running an item planned in an earlier step. They get no new item, are never
  // preempted, and their blocks stay reserved. plan() == plan({}).
  StepPlan plan(const std::map<int64_t, int64_t>& in_flight);
  // After the runner executed an item: computed += count; with a sampled token it is appended
  // (generated += 1); finished (EOS, stop string, max tokens) releases the sequence's blocks.
  // The scheduler also finishes a sequence once generated reaches max_new_tokens. mor::Error for an
  // item that does not continue a running sequence, or a token given iff the item does not sample.
  void complete(const StepItem& item, std::optional<int32_t> token, bool finished);
  // Drops a sequence in any state (e.g. the client disconnected), releasing its blocks; unknown: no-op.
  void abort(int64_t id);

  bool has(int64_t id) const;
  const Sequence& sequence(int64_t id) const;
  int64_t waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t running() const { return static_cast<int64_t>(running_.size()); }
  bool idle() const { return waiting_.empty() && running_.empty(); }
  std::vector<int64_t> waiting_ids() const { return {waiting_.begin(), waiting_.end()}; }  // queue order
  const std::vector<int64_t>& running_ids() const { return running_; }                   // admission order
  const SchedulerConfig& config() const { return config_; }

 private:
  void preempt(int64_t id);
  void finish(int64_t id);  // releases the blocks, leaves the running list and waiting queue
  int64_t demand_of(int64_t id, int64_t n) const;
  int64_t held_blocks(int64_t id) const;

  SchedulerConfig config_;
  KvBlockManager& kv_;
  KvDemand demand_;
  std::map<int64_t, Sequence> seqs_;
  std::deque<int64_t> waiting_;
  std::vector<int64_t> running_;  // admission order
};

}  // namespace mor::engine
