// The request scheduler of the inference engine (see scheduler.h): FIFO admission under a token
// budget and the KV pool, chunked prefill, preemption of the newest running sequences (recomputed
// later), and finishing of sequences that can no longer fit the whole pool.
#include "mor/engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "mor/core/error.h"

namespace mor::engine {

Scheduler::Scheduler(SchedulerConfig config, KvBlockManager& kv, KvDemand demand)
    : config_(config), kv_(kv), demand_(std::move(demand)) {
  MOR_CHECK(config_.max_batch_tokens > 0, "scheduler: max_batch_tokens must be positive, got ",
            config_.max_batch_tokens);
  MOR_CHECK(config_.max_running > 0, "scheduler: max_running must be positive, got ", config_.max_running);
  MOR_CHECK(config_.max_queue >= 0, "scheduler: max_queue must be >= 0, got ", config_.max_queue);
  MOR_CHECK(static_cast<bool>(demand_), "scheduler: a KV demand function is required");
}

int64_t Scheduler::demand_of(int64_t id, int64_t n) const {
  int64_t blocks = demand_(kv_, id, n);
  MOR_CHECK(blocks >= 0, "scheduler: KV demand of sequence ", id, " for ", n, " tokens is negative (", blocks,
            ")");
  return blocks;
}

int64_t Scheduler::held_blocks(int64_t id) const {
  int64_t held = 0;
  for (int64_t slot = 0; slot < kv_.num_slots(); ++slot) held += static_cast<int64_t>(kv_.table(id, slot).size());
  return held;
}

Scheduler::Admit Scheduler::add(int64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens) {
  MOR_CHECK(id >= 0, "scheduler: sequence ids must be >= 0, got ", id);
  MOR_CHECK(!has(id), "scheduler: sequence ", id, " already exists");
  MOR_CHECK(!prompt.empty(), "scheduler: sequence ", id, " has an empty prompt");
  MOR_CHECK(max_new_tokens >= 1, "scheduler: sequence ", id, " must allow at least 1 new token, got ",
            max_new_tokens);
  MOR_CHECK(!kv_.has(id), "scheduler: sequence ", id, " already holds KV blocks");
  if (demand_of(id, static_cast<int64_t>(prompt.size())) > kv_.num_blocks()) return Admit::kTooLong;
  if (waiting() >= config_.max_queue) return Admit::kQueueFull;
  Sequence seq;
  seq.id = id;
  seq.prompt_len = static_cast<int64_t>(prompt.size());
  seq.tokens = std::move(prompt);
  seq.max_new_tokens = max_new_tokens;
  seqs_.emplace(id, std::move(seq));
  waiting_.push_back(id);
  return Admit::kQueued;
}

void Scheduler::preempt(int64_t id) {
  Sequence& seq = seqs_.at(id);
  kv_.release(id);
  seq.computed = 0;
  ++seq.preemptions;
  seq.status = SeqStatus::kWaiting;
  running_.erase(std::find(running_.begin(), running_.end(), id));
  waiting_.push_front(id);
}

void Scheduler::finish(int64_t id) {
  Sequence& seq = seqs_.at(id);
  kv_.release(id);
  seq.status = SeqStatus::kFinished;
  if (auto it = std::find(running_.begin(), running_.end(), id); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), id); it != waiting_.end()) waiting_.erase(it);
}

StepPlan Scheduler::plan() { return plan({}); }

StepPlan Scheduler::plan(const std::map<int64_t, int64_t>& in_flight) {
  StepPlan plan;
  int64_t budget = config_.max_batch_tokens;
  int64_t reserved = 0;  // worst-case blocks promised to the items planned so far (and in flight)
  for (const auto& [id, blocks] : in_flight) {
    MOR_CHECK(seqs_.count(id) && seqs_.at(id).status == SeqStatus::kRunning, "scheduler: in-flight sequence ", id,
              " is not running");
    reserved += std::max<int64_t>(0, blocks);
  }
  auto available = [&] { return kv_.free_blocks() - reserved; };
  // The newest running sequence that may be preempted (not in flight, not `self`); -1: none.
  auto victim_for = [&](int64_t self) -> int64_t {
    for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
      if (*it != self && !in_flight.count(*it)) return *it;
      if (*it == self) return -1;  // everything newer is in flight; older ones are kept
    }
    return -1;
  };

  // 1. Running sequences, oldest first. Preemption only removes sequences behind position i.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    const int64_t id = running_[i];
    if (in_flight.count(id)) {
      ++i;
      continue;
    }
    const Sequence& seq = seqs_.at(id);
    const int64_t size = static_cast<int64_t>(seq.tokens.size());
    const int64_t count = std::min(size - seq.computed, budget);
    int64_t need = demand_of(id, count);
    bool dropped = false;
    while (need > available()) {
      const int64_t victim = victim_for(id);
      if (victim >= 0) {
        preempt(victim);
        plan.preempted.push_back(victim);
        need = demand_of(id, count);
        continue;
      }
      if (!in_flight.empty()) {
        // Waiting for in-flight items to finish is enough: they release or settle their reservation.
        dropped = true;
        break;
      }
      if (reserved == 0 && kv_.used_blocks() == held_blocks(id)) {
        finish(id);  // it has the whole pool to itself and still does not fit
        plan.finished.push_back(id);
      } else {
        preempt(id);
        plan.preempted.push_back(id);
      }
      dropped = true;
      break;
    }
    if (dropped) break;  // it was the newest preemptible one (or must wait): stop here
    plan.items.push_back({id, seq.computed, count, seq.computed + count == size});
    budget -= count;
    reserved += need;
    ++i;
  }

  // 2. Waiting sequences, first come first served; none in a step that had to preempt.
  while (plan.preempted.empty() && !waiting_.empty() && running() < config_.max_running && budget > 0) {
    const int64_t id = waiting_.front();
    Sequence& seq = seqs_.at(id);
    const int64_t size = static_cast<int64_t>(seq.tokens.size());
    const int64_t count = std::min(size - seq.computed, budget);
    const int64_t need = demand_of(id, count);
    if (need > available()) {
      if (reserved == 0 && kv_.used_blocks() == 0 && in_flight.empty()) {
        finish(id);  // the whole pool is free and its first chunk still does not fit
        plan.finished.push_back(id);
        continue;
      }
      break;  // nothing is skipped: it blocks the ones behind it
    }
    waiting_.pop_front();
    seq.status = SeqStatus::kRunning;
    running_.push_back(id);
    plan.items.push_back({id, seq.computed, count, seq.computed + count == size});
    budget -= count;
    reserved += need;
  }

  plan.tokens = config_.max_batch_tokens - budget;
  return plan;
}

void Scheduler::complete(const StepItem& item, std::optional<int32_t> token, bool finished) {
  auto it = seqs_.find(item.seq);
  MOR_CHECK(it != seqs_.end(), "scheduler: complete() for unknown sequence ", item.seq);
  Sequence& seq = it->second;
  MOR_CHECK(seq.status == SeqStatus::kRunning, "scheduler: complete() for sequence ", item.seq,
            " which is not running");
  const int64_t size = static_cast<int64_t>(seq.tokens.size());
  MOR_CHECK(item.begin == seq.computed && item.count >= 1 && item.begin + item.count <= size,
            "scheduler: item [", item.begin, ", ", item.begin + item.count, ") does not continue sequence ",
            item.seq, " (", seq.computed, " of ", size, " tokens computed)");
  MOR_CHECK(item.samples == (item.begin + item.count == size), "scheduler: item of sequence ", item.seq,
            " samples iff it reaches the end of its tokens");
  MOR_CHECK(token.has_value() == item.samples, "scheduler: sequence ", item.seq,
            item.samples ? ": the item samples but no token was given" : ": a token for an item that does not sample");
  seq.computed += item.count;
  if (token) {
    seq.tokens.push_back(*token);
    ++seq.generated;
  }
  if (finished || seq.generated >= seq.max_new_tokens) finish(item.seq);
}

void Scheduler::abort(int64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  finish(id);
  seqs_.erase(it);
}

bool Scheduler::has(int64_t id) const { return seqs_.count(id) > 0; }

const Sequence& Scheduler::sequence(int64_t id) const {
  auto it = seqs_.find(id);
  MOR_CHECK(it != seqs_.end(), "scheduler: unknown sequence ", id);
  return it->second;
}

}  // namespace mor::engine
