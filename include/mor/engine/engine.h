// The inference engine: a MoRModel, a paged K/V cache per recursion depth, the scheduler and
// per-request samplers, behind engine::Service. Each engine step is plan -> run -> complete: the
// scheduler picks decode tokens and prefill chunks under the token budget, one forward_cached call
// runs them all (tokens of every request active at a recursion share one batched call through the
// shared block), then each finished chunk samples its next token, applies stop strings and
// streams it. K/V blocks are written only for the slots a token reaches (recursion-wise caching);
// with KV sharing only recursion 0's slots exist.
//
// Threading: start() runs steps on a background thread until stop(); submit() and the streams are
// thread-safe. Without start(), step() / run_until_idle() drive it from the caller's thread
// (mor generate, mor bench, tests).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mor/engine/scheduler.h"
#include "mor/engine/service.h"
#include "mor/io/tokenizer.h"

namespace mor::model {
class MoRModel;
}

namespace mor::engine {

struct EngineOptions {
  int64_t kv_block_size = 16;     // tokens per K/V block
  int64_t kv_memory_mb = 1024;    // K/V pool size
  int64_t kv_blocks = 0;          // > 0: exactly this many blocks (overrides kv_memory_mb)
  SchedulerConfig scheduler;
  uint64_t seed = 0;              // seeds of requests that give none: seed + request id
  // Depth-wise batching: each step runs ONE recursion for every chunk in the shared block, new
  // chunks at recursion 0 together with earlier ones at deeper recursions, so the block call stays
  // full as tokens exit. Off: each step runs its new chunks through all their recursions.
  bool depth_wise_batching = true;
};

// Timeline of one finished request (seconds on a steady clock).
struct RequestTiming {
  int64_t id = 0;
  int64_t prompt_tokens = 0, generated = 0;
  double submitted = 0.0, first_token = 0.0, finished = 0.0;  // first_token 0: none
};

struct EngineStats {
  int64_t steps = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;
  int64_t preemptions = 0;
  int64_t peak_kv_blocks = 0;
  int64_t block_calls = 0;        // decode_recursion calls
  int64_t mixed_depth_calls = 0;  // ... of which mixed chunks at different recursions
  std::vector<int64_t> slot_tokens;  // tokens appended per cache slot since start
  std::vector<RequestTiming> finished;  // every finished request, in finishing order
};

class Engine final : public Service {
 public:
  Engine(std::shared_ptr<const model::MoRModel> model, io::Tokenizer tokenizer, std::string model_name,
         std::optional<int32_t> eos, EngineOptions options);
  ~Engine() override;

  std::unique_ptr<CompletionStream> submit(CompletionRequest request) override;
  ServiceMetrics metrics() const override;
  const io::Tokenizer& tokenizer() const override { return tokenizer_; }
  std::string model_name() const override { return model_name_; }
  int64_t max_context() const override;
  std::optional<int32_t> eos_id() const override { return eos_; }

  // One step; false when there was nothing to do.
  bool step();
  void run_until_idle();
  void start();
  void stop();

  EngineStats stats() const;
  const KvBlockManager& kv() const { return *kv_; }
  int64_t kv_bytes_per_block() const { return bytes_per_block_; }

  struct Request;  // per-request state (engine.cpp)
  struct Flight;   // a chunk in flight between steps (engine.cpp)

 private:
  void finish(Request& r, const std::string& reason, const std::string& error = {});

  std::shared_ptr<const model::MoRModel> model_;
  io::Tokenizer tokenizer_;
  std::string model_name_;
  std::optional<int32_t> eos_;
  EngineOptions options_;
  int64_t bytes_per_block_ = 0;
  std::unique_ptr<KvBlockManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<class PagedKvCache> cache_;
  std::map<int64_t, std::shared_ptr<Request>> requests_;
  std::map<int64_t, std::unique_ptr<Flight>> flights_;  // by sequence
  int64_t next_id_ = 0;
  mutable std::mutex mutex_;  // guards everything above against submit()/metrics() during steps
  std::condition_variable wake_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  EngineStats stats_;
  ServiceMetrics totals_;
  std::deque<std::pair<double, int64_t>> rate_window_;  // (time, generated tokens) for tokens/s
};

}  // namespace mor::engine
