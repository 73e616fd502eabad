// Unit tests of engine::Scheduler: one targeted test per plan() rule, argument errors, abort in every
// state, and random workloads run to completion with a fake MoR runner (hash "model", per-token
// recursion depth, recursion-wise KV caching into a physical content array) checked against the
// model run alone, so preemption + recompute and chunked prefill are verified end to end.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "error_testing.h"
#include "mor/engine/scheduler.h"

namespace mor::engine {
namespace {

using mor::testing::expect_error;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

constexpr int32_t kEos = 0;

// The fake model: the next token is a hash of all previous tokens, EOS with probability 1/16.
int32_t next_token(const std::vector<int32_t>& tokens) {
  uint64_t h = 12345;
  for (int32_t t : tokens) h = mix(h ^ static_cast<uint32_t>(t));
  return h % 16 == 0 ? kEos : static_cast<int32_t>(1 + (h >> 8) % 999);
}

std::vector<int32_t> run_alone(std::vector<int32_t> tokens, int64_t max_new_tokens) {
  for (int64_t g = 0; g < max_new_tokens; ++g) {
    tokens.push_back(next_token(tokens));
    if (tokens.back() == kEos) break;
  }
  return tokens;
}

// A MoR layout: prelude and coda slots see every token; block slot (r, l) sees the tokens whose
// recursion depth (1..recursions, a hash of position and token) exceeds r.
struct Layout {
  int64_t prelude = 1, coda = 1, block_layers = 2, recursions = 3;
  int64_t slots() const { return prelude + coda + recursions * block_layers; }
  int64_t min_depth(int64_t slot) const {  // a token is cached in `slot` iff its depth >= this
    return slot < prelude + coda ? 0 : 1 + (slot - prelude - coda) / block_layers;
  }
  int64_t depth(const std::vector<int32_t>& tokens, int64_t k) const {
    return 1 + static_cast<int64_t>(mix(static_cast<uint64_t>(k) * 1000003u + static_cast<uint32_t>(tokens[k])) %
                                    static_cast<uint64_t>(recursions));
  }
  // Worst case: every slot of every new token.
  KvDemand demand() const {
    const int64_t n_slots = slots();
    return [n_slots](const KvBlockManager& kv, int64_t seq, int64_t n) {
      int64_t blocks = 0;
      for (int64_t s = 0; s < n_slots; ++s) blocks += kv.blocks_needed(seq, s, n);
      return blocks;
    };
  }
  int64_t worst_blocks(int64_t tokens, int64_t block_size) const { return slots() * ceil_div(tokens, block_size); }
};

// Executes plans: appends what each token really writes (after all items of the step, as a real
// runner would), stores (seq, position) in the physical blocks, verifies every slot's content on
// sampling, then completes the items. Tracks each sequence's next expected position.
class FakeRunner {
 public:
  FakeRunner(Layout layout, KvBlockManager& kv, Scheduler& sched)
      : layout_(layout), kv_(kv), sched_(sched),
        content_(static_cast<size_t>(kv.num_blocks() * kv.block_size()), -1) {}

  void run(const StepPlan& plan) {
    for (int64_t p : plan.preempted) {
      EXPECT_FALSE(kv_.has(p)) << "preempted sequence " << p << " still holds blocks";
      EXPECT_EQ(sched_.sequence(p).computed, 0);
      next_begin_[p] = 0;
    }
    for (int64_t f : plan.finished) EXPECT_FALSE(kv_.has(f));
    for (const StepItem& item : plan.items) write(item);
    for (const StepItem& item : plan.items) {
      const Sequence& seq = sched_.sequence(item.seq);
      if (!item.samples) {
        sched_.complete(item, std::nullopt, false);
        continue;
      }
      verify_cache(item.seq, seq.tokens);
      const int32_t token = next_token(seq.tokens);
      sched_.complete(item, token, token == kEos);
    }
  }
  void forget(int64_t seq) { next_begin_.erase(seq); }
  int64_t failed_appends() const { return failed_appends_; }

 private:
  void write(const StepItem& item) {
    const std::vector<int32_t>& tokens = sched_.sequence(item.seq).tokens;
    EXPECT_EQ(item.begin, next_begin_[item.seq]) << "sequence " << item.seq << " computed out of order";
    EXPECT_EQ(item.samples, item.begin + item.count == static_cast<int64_t>(tokens.size()));
    next_begin_[item.seq] = item.begin + item.count;
    for (int64_t slot = 0; slot < layout_.slots(); ++slot) {
      std::vector<int64_t> reached;
      for (int64_t k = item.begin; k < item.begin + item.count; ++k) {
        if (layout_.depth(tokens, k) >= layout_.min_depth(slot)) reached.push_back(k);
      }
      const int64_t old_len = kv_.length(item.seq, slot);
      if (!kv_.append(item.seq, slot, static_cast<int64_t>(reached.size()))) {
        ++failed_appends_;
        ADD_FAILURE() << "append of " << reached.size() << " tokens failed: KV over-allocated";
        continue;
      }
      for (size_t j = 0; j < reached.size(); ++j) {
        auto [b, off] = kv_.locate(item.seq, slot, old_len + static_cast<int64_t>(j));
        content_[static_cast<size_t>(b * kv_.block_size() + off)] = item.seq * 100000 + reached[j];
      }
    }
  }
  // Every slot holds exactly the positions < tokens.size() reaching it, in order, untouched by others.
  void verify_cache(int64_t seq, const std::vector<int32_t>& tokens) {
    for (int64_t slot = 0; slot < layout_.slots(); ++slot) {
      int64_t j = 0;
      for (int64_t k = 0; k < static_cast<int64_t>(tokens.size()); ++k) {
        if (layout_.depth(tokens, k) < layout_.min_depth(slot)) continue;
        ASSERT_LT(j, kv_.length(seq, slot)) << "slot " << slot << " of sequence " << seq << " is missing tokens";
        auto [b, off] = kv_.locate(seq, slot, j++);
        ASSERT_EQ(content_[static_cast<size_t>(b * kv_.block_size() + off)], seq * 100000 + k)
            << "slot " << slot << " of sequence " << seq << " holds the wrong token";
      }
      ASSERT_EQ(j, kv_.length(seq, slot)) << "slot " << slot << " of sequence " << seq << " holds extra tokens";
    }
  }

  Layout layout_;
  KvBlockManager& kv_;
  Scheduler& sched_;
  std::vector<int64_t> content_;
  std::map<int64_t, int64_t> next_begin_;
  int64_t failed_appends_ = 0;
};

// --- a one-slot setup for the targeted rule tests: demand = blocks for n more tokens ----------------

KvDemand one_slot_demand() {
  return [](const KvBlockManager& kv, int64_t seq, int64_t n) { return kv.blocks_needed(seq, 0, n); };
}

// Runs one step with a trivial runner: appends exactly `count` tokens, samples token 7, never EOS.
void run_step(Scheduler& sched, KvBlockManager& kv, const StepPlan& plan) {
  for (const StepItem& item : plan.items) ASSERT_TRUE(kv.append(item.seq, 0, item.count));
  for (const StepItem& item : plan.items) {
    sched.complete(item, item.samples ? std::optional<int32_t>(7) : std::nullopt, false);
  }
  kv.check_invariants();
}

std::vector<int32_t> prompt_of(int64_t n) { return std::vector<int32_t>(static_cast<size_t>(n), 5); }

std::vector<int64_t> item_seqs(const StepPlan& plan) {
  std::vector<int64_t> ids;
  for (const StepItem& item : plan.items) ids.push_back(item.seq);
  return ids;
}

TEST(Scheduler, ConfigAndArgumentsAreValidated) {
  KvBlockManager kv(1, 4, 8);
  expect_error([&] { Scheduler({0, 4, 4}, kv, one_slot_demand()); });
  expect_error([&] { Scheduler({8, 0, 4}, kv, one_slot_demand()); });
  expect_error([&] { Scheduler({8, 4, -1}, kv, one_slot_demand()); });
  expect_error([&] { Scheduler({8, 4, 4}, kv, KvDemand{}); });
  Scheduler sched({8, 4, 4}, kv, one_slot_demand());
  EXPECT_EQ(sched.add(1, prompt_of(3), 2), Scheduler::Admit::kQueued);
  expect_error([&] { sched.add(1, prompt_of(3), 2); });   // duplicate id
  expect_error([&] { sched.add(-2, prompt_of(3), 2); });  // negative id
  expect_error([&] { sched.add(2, {}, 2); });             // empty prompt
  expect_error([&] { sched.add(3, prompt_of(3), 0); });
  expect_error([&] { sched.sequence(99); });
  StepPlan plan = sched.plan();
  ASSERT_EQ(plan.items.size(), 1u);
  StepItem item = plan.items[0];
  EXPECT_TRUE(item.samples);
  ASSERT_TRUE(kv.append(1, 0, 3));
  StepItem unknown = item;
  unknown.seq = 42;
  expect_error([&] { sched.complete(unknown, 7, false); });
  StepItem shifted = item;
  shifted.begin = 1;
  expect_error([&] { sched.complete(shifted, 7, false); });
  StepItem too_long = item;
  too_long.count = 4;
  expect_error([&] { sched.complete(too_long, 7, false); });
  expect_error([&] { sched.complete(item, std::nullopt, false); });  // samples but no token
  StepItem partial{1, 0, 2, false};
  expect_error([&] { sched.complete(partial, 7, false); });  // token without sampling
  sched.complete(item, 7, false);
  EXPECT_EQ(sched.sequence(1).tokens.back(), 7);
  expect_error([&] { sched.complete(item, 7, false); });  // the same item twice
}

TEST(Scheduler, AddRefusesTooLongPromptsAndFullQueue) {
  KvBlockManager kv(2, 4, 6);  // 2 slots: a prompt of n tokens needs 2 * ceil(n / 4) blocks
  Scheduler sched({64, 4, 2}, kv, [](const KvBlockManager& k, int64_t seq, int64_t n) {
    return k.blocks_needed(seq, 0, n) + k.blocks_needed(seq, 1, n);
  });
  EXPECT_EQ(sched.add(1, prompt_of(13), 1), Scheduler::Admit::kTooLong);  // 8 blocks > 6
  EXPECT_FALSE(sched.has(1));
  EXPECT_EQ(sched.add(2, prompt_of(12), 1), Scheduler::Admit::kQueued);  // exactly the pool
  EXPECT_EQ(sched.add(3, prompt_of(1), 1), Scheduler::Admit::kQueued);
  EXPECT_EQ(sched.add(4, prompt_of(1), 1), Scheduler::Admit::kQueueFull);
  EXPECT_FALSE(sched.has(4));
  EXPECT_EQ(sched.add(5, prompt_of(13), 1), Scheduler::Admit::kTooLong);  // too long beats queue full
  EXPECT_EQ(sched.waiting(), 2);
  StepPlan plan = sched.plan();  // admits 2 (the whole pool); 3 must wait
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{2}));
  EXPECT_EQ(sched.add(4, prompt_of(1), 1), Scheduler::Admit::kQueued);
}

TEST(Scheduler, DecodeItemsFirstInAdmissionOrderThenAdmissions) {
  KvBlockManager kv(1, 4, 64);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(10, prompt_of(3), 5), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(4, prompt_of(6), 5), Scheduler::Admit::kQueued);
  StepPlan first = sched.plan();
  EXPECT_EQ(item_seqs(first), (std::vector<int64_t>{10, 4}));
  run_step(sched, kv, first);
  ASSERT_EQ(sched.add(2, prompt_of(5), 5), Scheduler::Admit::kQueued);
  StepPlan plan = sched.plan();
  ASSERT_EQ(plan.items.size(), 3u);
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{10, 4, 2}));  // admission order, not id order
  EXPECT_EQ(plan.items[0].begin, 3);
  EXPECT_EQ(plan.items[0].count, 1);
  EXPECT_TRUE(plan.items[0].samples);
  EXPECT_EQ(plan.items[1].begin, 6);
  EXPECT_EQ(plan.items[1].count, 1);
  EXPECT_EQ(plan.items[2].begin, 0);
  EXPECT_EQ(plan.items[2].count, 5);
  EXPECT_EQ(plan.tokens, 7);
  EXPECT_EQ(sched.running_ids(), (std::vector<int64_t>{10, 4, 2}));
}

TEST(Scheduler, PrefillChunkIsCutToRemainingBudget) {
  KvBlockManager kv(1, 4, 64);
  Scheduler sched({10, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(1, prompt_of(2), 9), Scheduler::Admit::kQueued);
  run_step(sched, kv, sched.plan());  // 1 now decodes
  ASSERT_EQ(sched.add(2, prompt_of(25), 9), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(3, prompt_of(4), 9), Scheduler::Admit::kQueued);
  std::vector<std::pair<int64_t, int64_t>> chunks;  // (begin, count) of sequence 2
  for (int step = 0; step < 4; ++step) {
    StepPlan plan = sched.plan();
    EXPECT_EQ(plan.items[0].seq, 1);
    EXPECT_EQ(plan.items[0].count, 1);
    ASSERT_GE(plan.items.size(), 2u);
    EXPECT_EQ(plan.items[1].seq, 2);
    chunks.emplace_back(plan.items[1].begin, plan.items[1].count);
    EXPECT_EQ(plan.items[1].samples, plan.items[1].begin + plan.items[1].count >= 25);
    EXPECT_LE(plan.tokens, 10);
    if (step < 2) {
      EXPECT_EQ(plan.items.size(), 2u);  // no budget left for 3
    }
    run_step(sched, kv, plan);
  }
  // 9 + 9 + 7 (then 3 gets the remaining 2 of the budget in step 3), then 2 decodes.
  EXPECT_EQ(chunks, (std::vector<std::pair<int64_t, int64_t>>{{0, 9}, {9, 9}, {18, 7}, {25, 1}}));
  EXPECT_EQ(sched.sequence(3).computed, 4);  // 2 tokens in step 3, 2 in step 4 (running prefill)
}

TEST(Scheduler, PreemptionPicksNewestRunningSequence) {
  KvBlockManager kv(1, 2, 6);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  for (int64_t id : {1, 2, 3}) ASSERT_EQ(sched.add(id, prompt_of(4), 9), Scheduler::Admit::kQueued);
  StepPlan first = sched.plan();  // 2 blocks each: the pool is full
  EXPECT_EQ(item_seqs(first), (std::vector<int64_t>{1, 2, 3}));
  run_step(sched, kv, first);
  EXPECT_EQ(kv.free_blocks(), 0);
  ASSERT_EQ(sched.add(4, prompt_of(1), 9), Scheduler::Admit::kQueued);
  StepPlan plan = sched.plan();  // 1 needs a block: 3 (newest) goes, freeing enough for 1 and 2
  EXPECT_EQ(plan.preempted, (std::vector<int64_t>{3}));
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{1, 2}));  // no admission in a preempting step
  EXPECT_EQ(sched.sequence(3).status, SeqStatus::kWaiting);
  EXPECT_EQ(sched.sequence(3).computed, 0);
  EXPECT_EQ(sched.sequence(3).preemptions, 1);
  EXPECT_EQ(sched.sequence(3).tokens.size(), 5u);  // its generated token is kept
  EXPECT_EQ(sched.sequence(3).generated, 1);
  EXPECT_FALSE(kv.has(3));
  EXPECT_EQ(sched.waiting_ids(), (std::vector<int64_t>{3, 4}));  // front of the queue
  EXPECT_EQ(sched.running_ids(), (std::vector<int64_t>{1, 2}));
  run_step(sched, kv, plan);
  // Recompute: 3 is next in line and gets prompt + generated token as one prefill, sampling again.
  sched.abort(1);
  sched.abort(2);
  StepPlan again = sched.plan();
  ASSERT_FALSE(again.items.empty());
  EXPECT_EQ(again.items[0].seq, 3);
  EXPECT_EQ(again.items[0].begin, 0);
  EXPECT_EQ(again.items[0].count, 5);
  EXPECT_TRUE(again.items[0].samples);
}

TEST(Scheduler, InFlightSequencesGetNoItemsAreNeverPreemptedAndKeepTheirReservation) {
  // Depth-wise batching: sequence 3 (the newest) has an item in flight that may still need 2 blocks.
  KvBlockManager kv(1, 2, 6);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  for (int64_t id : {1, 2, 3}) ASSERT_EQ(sched.add(id, prompt_of(4), 9), Scheduler::Admit::kQueued);
  run_step(sched, kv, sched.plan());  // 2 full blocks each: pool full
  ASSERT_EQ(kv.free_blocks(), 0);
  // Decoding needs a new block for each (5th token). 3 is in flight: not planned, not preempted;
  // the newest preemptible one (2) goes instead.
  StepPlan plan = sched.plan({{3, 0}});
  EXPECT_EQ(plan.preempted, (std::vector<int64_t>{2}));
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{1}));
  EXPECT_EQ(sched.sequence(3).status, SeqStatus::kRunning);
  // With 3's outstanding reservation covering the freed blocks, 1 cannot be planned and must wait:
  // no self-preemption and no finishing while something is in flight.
  KvBlockManager kv2(1, 2, 4);
  Scheduler s2({64, 8, 8}, kv2, one_slot_demand());
  for (int64_t id : {1, 2}) ASSERT_EQ(s2.add(id, prompt_of(4), 9), Scheduler::Admit::kQueued);
  run_step(s2, kv2, s2.plan());  // pool full
  StepPlan waiting = s2.plan({{2, 2}});
  EXPECT_TRUE(waiting.items.empty());
  EXPECT_TRUE(waiting.preempted.empty());
  EXPECT_TRUE(waiting.finished.empty());
  EXPECT_EQ(s2.sequence(1).status, SeqStatus::kRunning);
  // Once 2's chunk is done (complete + release), 1 proceeds.
  s2.abort(2);
  EXPECT_EQ(item_seqs(s2.plan()), (std::vector<int64_t>{1}));
}

TEST(Scheduler, PreemptsSeveralNewestInOrderAndRequeuesThemFifo) {
  KvBlockManager kv(1, 1, 8);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(1, prompt_of(2), 9), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(2, prompt_of(2), 9), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(3, prompt_of(2), 9), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(4, prompt_of(2), 9), Scheduler::Admit::kQueued);
  run_step(sched, kv, sched.plan());
  EXPECT_EQ(kv.free_blocks(), 0);
  ASSERT_EQ(sched.add(5, prompt_of(1), 9), Scheduler::Admit::kQueued);
  StepPlan plan = sched.plan();  // 1: 4 goes; 2: uses the second block of 4; 3: 3 goes itself
  EXPECT_EQ(plan.preempted, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(sched.waiting_ids(), (std::vector<int64_t>{3, 4, 5}));  // older preempted first
}

TEST(Scheduler, SequenceThatWouldPreemptItselfIsPreempted) {
  // Two decoding sequences at a block boundary, one free block: the older takes it; the newer would
  // have to preempt itself, so it is preempted.
  KvBlockManager kv(1, 2, 5);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(1, prompt_of(4), 9), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(2, prompt_of(4), 9), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(3, prompt_of(3), 9), Scheduler::Admit::kQueued);  // 2 blocks: does not fit yet
  StepPlan first = sched.plan();
  EXPECT_EQ(item_seqs(first), (std::vector<int64_t>{1, 2}));
  run_step(sched, kv, first);
  ASSERT_EQ(kv.free_blocks(), 1);
  StepPlan plan = sched.plan();  // token 4 of each needs a third block
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{1}));
  EXPECT_EQ(plan.preempted, (std::vector<int64_t>{2}));
  EXPECT_TRUE(plan.finished.empty());
  EXPECT_EQ(sched.sequence(2).status, SeqStatus::kWaiting);
  EXPECT_EQ(sched.sequence(2).preemptions, 1);
  EXPECT_FALSE(kv.has(2));
  EXPECT_EQ(sched.running_ids(), (std::vector<int64_t>{1}));
  EXPECT_EQ(sched.waiting_ids(), (std::vector<int64_t>{2, 3}));
  run_step(sched, kv, plan);
  // 2 (5 tokens: 3 blocks) does not fit the 2 free blocks; 3 would, but must not overtake it.
  StepPlan next = sched.plan();
  EXPECT_EQ(item_seqs(next), (std::vector<int64_t>{1}));
  EXPECT_TRUE(next.preempted.empty());
  EXPECT_EQ(sched.waiting_ids(), (std::vector<int64_t>{2, 3}));
}

TEST(Scheduler, WaitingHeadThatDoesNotFitBlocksLaterOnes) {
  KvBlockManager kv(1, 1, 10);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(1, prompt_of(6), 9), Scheduler::Admit::kQueued);
  run_step(sched, kv, sched.plan());  // 6 blocks used, 4 free
  ASSERT_EQ(sched.add(2, prompt_of(5), 9), Scheduler::Admit::kQueued);  // does not fit beside 1
  ASSERT_EQ(sched.add(3, prompt_of(1), 9), Scheduler::Admit::kQueued);  // would fit, must not overtake
  StepPlan plan = sched.plan();
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{1}));
  EXPECT_EQ(sched.waiting_ids(), (std::vector<int64_t>{2, 3}));
  run_step(sched, kv, plan);
  sched.abort(1);
  StepPlan after = sched.plan();
  EXPECT_EQ(item_seqs(after), (std::vector<int64_t>{2, 3}));
}

TEST(Scheduler, MaxRunningLimitsAdmission) {
  KvBlockManager kv(1, 4, 64);
  Scheduler sched({64, 2, 8}, kv, one_slot_demand());
  for (int64_t id = 1; id <= 4; ++id) ASSERT_EQ(sched.add(id, prompt_of(3), 1), Scheduler::Admit::kQueued);
  StepPlan plan = sched.plan();
  EXPECT_EQ(item_seqs(plan), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(sched.running(), 2);
  run_step(sched, kv, plan);  // max_new_tokens 1: both finish and free their blocks
  EXPECT_EQ(sched.sequence(1).status, SeqStatus::kFinished);
  EXPECT_FALSE(kv.has(1));
  EXPECT_EQ(item_seqs(sched.plan()), (std::vector<int64_t>{3, 4}));
}

TEST(Scheduler, SequenceOutgrowingThePoolIsFinished) {
  KvBlockManager kv(1, 2, 3);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(1, prompt_of(5), 100), Scheduler::Admit::kQueued);
  std::set<int64_t> finished;
  for (int step = 0; step < 10 && !sched.idle(); ++step) {
    StepPlan plan = sched.plan();
    EXPECT_TRUE(plan.preempted.empty());
    finished.insert(plan.finished.begin(), plan.finished.end());
    run_step(sched, kv, plan);
  }
  ASSERT_TRUE(sched.idle());
  EXPECT_EQ(finished, (std::set<int64_t>{1}));
  EXPECT_EQ(sched.sequence(1).status, SeqStatus::kFinished);
  // Prompt 5 + 2 sampled: 6 tokens fill the 3 blocks; the 7th (sampled) can never be cached.
  EXPECT_EQ(sched.sequence(1).tokens.size(), 7u);
  EXPECT_EQ(sched.sequence(1).generated, 2);
  EXPECT_EQ(kv.used_blocks(), 0);
}

TEST(Scheduler, CompleteFinishesOnEosAndMaxTokens) {
  KvBlockManager kv(1, 4, 64);
  Scheduler sched({64, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(1, prompt_of(3), 2), Scheduler::Admit::kQueued);
  ASSERT_EQ(sched.add(2, prompt_of(3), 50), Scheduler::Admit::kQueued);
  StepPlan plan = sched.plan();
  for (const StepItem& item : plan.items) ASSERT_TRUE(kv.append(item.seq, 0, item.count));
  sched.complete(plan.items[0], 8, false);
  sched.complete(plan.items[1], kEos, true);  // the caller says EOS
  EXPECT_EQ(sched.sequence(2).status, SeqStatus::kFinished);
  EXPECT_FALSE(kv.has(2));
  plan = sched.plan();
  ASSERT_EQ(item_seqs(plan), (std::vector<int64_t>{1}));
  ASSERT_TRUE(kv.append(1, 0, 1));
  sched.complete(plan.items[0], 9, false);  // second token: max_new_tokens reached
  EXPECT_EQ(sched.sequence(1).status, SeqStatus::kFinished);
  EXPECT_EQ(sched.sequence(1).tokens, (std::vector<int32_t>{5, 5, 5, 8, 9}));
  EXPECT_EQ(sched.sequence(1).generated, 2);
  EXPECT_TRUE(sched.idle());
  EXPECT_EQ(kv.used_blocks(), 0);
  expect_error([&] { sched.complete(plan.items[0], 9, false); });  // finished: not running
}

TEST(Scheduler, AbortInEveryStateReleasesBlocks) {
  KvBlockManager kv(1, 2, 64);
  Scheduler sched({6, 8, 8}, kv, one_slot_demand());
  ASSERT_EQ(sched.add(1, prompt_of(3), 9), Scheduler::Admit::kQueued);   // will decode
  ASSERT_EQ(sched.add(2, prompt_of(10), 9), Scheduler::Admit::kQueued);  // will be mid-prefill
  ASSERT_EQ(sched.add(3, prompt_of(2), 1), Scheduler::Admit::kQueued);   // will be finished
  ASSERT_EQ(sched.add(4, prompt_of(2), 9), Scheduler::Admit::kQueued);   // stays waiting
  run_step(sched, kv, sched.plan());  // 1: 3 tokens, 2: 3 of 10
  run_step(sched, kv, sched.plan());  // 1 decodes, 2: 5 more (8 of 10)
  ASSERT_EQ(sched.sequence(1).status, SeqStatus::kRunning);
  ASSERT_EQ(sched.sequence(2).computed, 8);
  ASSERT_EQ(sched.sequence(3).status, SeqStatus::kWaiting);
  ASSERT_TRUE(kv.has(1));
  ASSERT_TRUE(kv.has(2));
  sched.abort(2);  // running, prefilling
  EXPECT_FALSE(sched.has(2));
  EXPECT_FALSE(kv.has(2));
  EXPECT_EQ(sched.running_ids(), (std::vector<int64_t>{1}));
  run_step(sched, kv, sched.plan());  // 1 decodes, 3 prefills and finishes, 4 prefills
  ASSERT_EQ(sched.sequence(3).status, SeqStatus::kFinished);
  sched.abort(3);  // finished: dropped
  EXPECT_FALSE(sched.has(3));
  sched.abort(1);  // running, decoding
  EXPECT_FALSE(kv.has(1));
  ASSERT_EQ(sched.add(5, prompt_of(2), 9), Scheduler::Admit::kQueued);
  sched.abort(5);  // waiting
  EXPECT_FALSE(sched.has(5));
  EXPECT_EQ(sched.waiting(), 0);
  sched.abort(4);
  sched.abort(12345);  // unknown: no-op
  EXPECT_TRUE(sched.idle());
  EXPECT_EQ(kv.used_blocks(), 0);
  kv.check_invariants();
  ASSERT_EQ(sched.add(3, prompt_of(2), 9), Scheduler::Admit::kQueued);  // the id is free again
}

// --- random workloads ------------------------------------------------------------------------------

struct Stats {
  int64_t steps = 0, finished_exact = 0, preemptions = 0, multi_preempted_exact = 0, chunked_items = 0;
  int64_t queue_full = 0, too_long = 0, truncated = 0, aborted_waiting = 0, aborted_running = 0;
};

struct Request {
  int64_t id = 0, arrival = 0, max_new = 0;
  std::vector<int32_t> prompt;
};

void run_workload(uint64_t seed, Stats& stats) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  Layout layout{uniform(0, 1), uniform(0, 1), uniform(1, 2), uniform(1, 3)};
  const int64_t bs = int64_t{1} << uniform(0, 3);
  const int64_t pool = layout.worst_blocks(uniform(6, 70), bs);
  KvBlockManager kv(layout.slots(), bs, pool);
  SchedulerConfig config{uniform(1, 3) == 1 ? uniform(1, 6) : uniform(4, 48), uniform(1, 6), uniform(1, 8)};
  Scheduler sched(config, kv, layout.demand());
  FakeRunner runner(layout, kv, sched);

  std::deque<Request> arrivals;
  const int64_t n_requests = uniform(4, 24);
  for (int64_t i = 0; i < n_requests; ++i) {
    Request r;
    r.id = i * 3 + uniform(0, 2);
    r.arrival = uniform(0, 2 * n_requests);
    r.max_new = uniform(1, 24);
    r.prompt.resize(static_cast<size_t>(uniform(1, 40)));
    for (int32_t& t : r.prompt) t = static_cast<int32_t>(uniform(1, 999));
    arrivals.push_back(r);
  }
  std::stable_sort(arrivals.begin(), arrivals.end(),
                   [](const Request& a, const Request& b) { return a.arrival < b.arrival; });
  std::map<int64_t, Request> queued;  // accepted requests
  std::set<int64_t> aborted, hopeless;
  std::deque<int64_t> model_queue;  // the waiting queue as the rules predict it

  for (int64_t step = 0; !(arrivals.empty() && sched.idle()); ++step) {
    ASSERT_LT(step, 20000) << "no progress";
    while (!arrivals.empty() && arrivals.front().arrival <= step) {
      const Request& r = arrivals.front();
      const bool too_long = layout.worst_blocks(static_cast<int64_t>(r.prompt.size()), bs) > pool;
      const bool full = sched.waiting() >= config.max_queue;
      Scheduler::Admit admit = sched.add(r.id, r.prompt, r.max_new);
      if (too_long) {
        ASSERT_EQ(admit, Scheduler::Admit::kTooLong);
        ++stats.too_long;
      } else if (full) {
        ASSERT_EQ(admit, Scheduler::Admit::kQueueFull);
        ++stats.queue_full;
        break;  // retry next step, keeping arrival order
      } else {
        ASSERT_EQ(admit, Scheduler::Admit::kQueued);
        queued[r.id] = r;
        model_queue.push_back(r.id);
      }
      arrivals.pop_front();
    }
    if (uniform(0, 24) == 0 && !queued.empty()) {  // a client disconnects
      auto it = queued.begin();
      std::advance(it, uniform(0, static_cast<int64_t>(queued.size()) - 1));
      const int64_t id = it->first;
      if (!aborted.count(id) && sched.sequence(id).status != SeqStatus::kFinished) {
        (sched.sequence(id).status == SeqStatus::kWaiting ? stats.aborted_waiting : stats.aborted_running)++;
        sched.abort(id);
        EXPECT_FALSE(sched.has(id));
        EXPECT_FALSE(kv.has(id));
        aborted.insert(id);
        runner.forget(id);
        model_queue.erase(std::remove(model_queue.begin(), model_queue.end(), id), model_queue.end());
      }
    }

    const std::vector<int64_t> running_before = sched.running_ids();
    StepPlan plan = sched.plan();
    ++stats.steps;
    stats.preemptions += static_cast<int64_t>(plan.preempted.size());
    hopeless.insert(plan.finished.begin(), plan.finished.end());

    // Budget, one item per sequence, order: running (admission order) before new admissions.
    int64_t budget = config.max_batch_tokens, reserved = 0;
    std::set<int64_t> seen;
    std::vector<int64_t> admitted;
    size_t run_pos = 0;
    for (const StepItem& item : plan.items) {
      ASSERT_TRUE(seen.insert(item.seq).second) << "two items for sequence " << item.seq;
      const Sequence& seq = sched.sequence(item.seq);
      const int64_t pending = static_cast<int64_t>(seq.tokens.size()) - seq.computed;
      EXPECT_EQ(item.begin, seq.computed);
      EXPECT_EQ(item.count, std::min(pending, budget)) << "chunk not cut to the remaining budget";
      if (item.count < pending) ++stats.chunked_items;
      budget -= item.count;
      reserved += layout.demand()(kv, item.seq, item.count);
      auto pos = std::find(running_before.begin() + static_cast<std::ptrdiff_t>(run_pos), running_before.end(),
                           item.seq);
      if (pos != running_before.end()) {
        ASSERT_TRUE(admitted.empty()) << "a running sequence after a new admission";
        run_pos = static_cast<size_t>(pos - running_before.begin()) + 1;
      } else {
        ASSERT_EQ(std::count(running_before.begin(), running_before.end(), item.seq), 0) << "out of order";
        admitted.push_back(item.seq);
      }
    }
    EXPECT_EQ(plan.tokens, config.max_batch_tokens - budget);
    EXPECT_LE(plan.tokens, config.max_batch_tokens);
    EXPECT_LE(reserved, kv.free_blocks()) << "planned more KV than is free";
    EXPECT_LE(sched.running(), config.max_running);
    if (!plan.preempted.empty()) {
      EXPECT_TRUE(admitted.empty());
    }
    // A running sequence without an item was preempted, finished, or the budget ran out.
    for (int64_t id : running_before) {
      if (seen.count(id) || std::count(plan.preempted.begin(), plan.preempted.end(), id)) continue;
      if (std::count(plan.finished.begin(), plan.finished.end(), id)) continue;
      EXPECT_EQ(budget, 0) << "running sequence " << id << " skipped with budget left";
    }
    // FIFO: preempted ones to the front (older first), admissions and hopeless ones from the front.
    for (int64_t p : plan.preempted) {
      ASSERT_EQ(std::count(running_before.begin(), running_before.end(), p), 1);
      model_queue.push_front(p);
    }
    size_t next_admitted = 0;
    while (!model_queue.empty()) {
      const int64_t head = model_queue.front();
      if (next_admitted < admitted.size() && admitted[next_admitted] == head) {
        ++next_admitted;
      } else if (std::count(plan.finished.begin(), plan.finished.end(), head) &&
                 !std::count(running_before.begin(), running_before.end(), head)) {
      } else {
        break;
      }
      model_queue.pop_front();
    }
    EXPECT_EQ(next_admitted, admitted.size()) << "admission overtook a waiting sequence";
    EXPECT_EQ(sched.waiting_ids(), std::vector<int64_t>(model_queue.begin(), model_queue.end()));
    // Nothing that could have been admitted was left waiting.
    if (!model_queue.empty() && plan.preempted.empty() && budget > 0 && sched.running() < config.max_running) {
      const Sequence& head = sched.sequence(model_queue.front());
      const int64_t count = std::min(static_cast<int64_t>(head.tokens.size()), budget);
      EXPECT_GT(layout.demand()(kv, head.id, count), kv.free_blocks() - reserved) << "head left waiting";
    }

    runner.run(plan);
    ASSERT_EQ(runner.failed_appends(), 0);
    ASSERT_NO_THROW(kv.check_invariants());
    for (const auto& [id, r] : queued) {
      if (aborted.count(id)) continue;
      const Sequence& seq = sched.sequence(id);
      EXPECT_EQ(kv.has(id), seq.status == SeqStatus::kRunning) << "sequence " << id;
    }
    EXPECT_EQ(kv.sequences().size(), static_cast<size_t>(sched.running()));
  }

  EXPECT_EQ(kv.used_blocks(), 0) << "block leak";
  EXPECT_TRUE(kv.sequences().empty());
  for (const auto& [id, r] : queued) {
    if (aborted.count(id)) continue;
    const Sequence& seq = sched.sequence(id);
    ASSERT_EQ(seq.status, SeqStatus::kFinished);
    const std::vector<int32_t> expected = run_alone(r.prompt, r.max_new);
    EXPECT_EQ(seq.generated, static_cast<int64_t>(seq.tokens.size()) - seq.prompt_len);
    // With every token's worst case fitting the pool, nothing can be cut short.
    if (layout.worst_blocks(static_cast<int64_t>(r.prompt.size()) + r.max_new, bs) <= pool) {
      ASSERT_EQ(seq.tokens, expected) << "sequence " << id << " (" << seq.preemptions << " preemptions)";
      ++stats.finished_exact;
      if (seq.preemptions >= 2) ++stats.multi_preempted_exact;
    } else {
      ASSERT_LE(seq.tokens.size(), expected.size());
      ASSERT_TRUE(std::equal(seq.tokens.begin(), seq.tokens.end(), expected.begin())) << "sequence " << id;
      if (seq.tokens.size() < expected.size()) {
        EXPECT_TRUE(hopeless.count(id)) << "sequence " << id << " cut short without being reported";
        ++stats.truncated;
      }
    }
  }
}

TEST(Scheduler, RandomWorkloadsMatchTheModelRunAlone) {
  Stats stats;
  for (uint64_t seed = 1; seed <= 2000; ++seed) {
    run_workload(seed, stats);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // The workloads exercise what they are meant to.
  EXPECT_GT(stats.finished_exact, 5000);
  EXPECT_GT(stats.preemptions, 1000);
  EXPECT_GT(stats.multi_preempted_exact, 100);
  EXPECT_GT(stats.chunked_items, 1000);
  EXPECT_GT(stats.queue_full, 1000);
  EXPECT_GT(stats.too_long, 1000);
  EXPECT_GT(stats.truncated, 100);
  EXPECT_GT(stats.aborted_waiting, 100);
  EXPECT_GT(stats.aborted_running, 100);
  RecordProperty("steps", static_cast<int>(stats.steps));
  std::printf("steps %lld exact %lld preemptions %lld multi %lld chunked %lld full %lld long %lld cut %lld "
              "abort w/r %lld/%lld\n",
              static_cast<long long>(stats.steps), static_cast<long long>(stats.finished_exact),
              static_cast<long long>(stats.preemptions), static_cast<long long>(stats.multi_preempted_exact),
              static_cast<long long>(stats.chunked_items), static_cast<long long>(stats.queue_full),
              static_cast<long long>(stats.too_long), static_cast<long long>(stats.truncated),
              static_cast<long long>(stats.aborted_waiting), static_cast<long long>(stats.aborted_running));
}

}  // namespace
}  // namespace mor::engine
