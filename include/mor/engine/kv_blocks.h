// Paged KV cache bookkeeping: fixed-size blocks from one pool (sized from a memory budget), and per
// sequence one block table per cache slot. A cache slot is one place K/V is stored: each prelude and
// coda layer, and each (recursion, block layer) pair -- with recursion-wise caching a token's K/V
// is written only in the slots of the recursions it reaches, so deeper slots hold fewer tokens;
// with KV sharing only recursion 0's slots exist. The tensors holding the blocks live with the
// runner; this class only decides which block holds which token. Torch-free, not thread-safe.
//
// Invariants (check_invariants()): every block is either free or owned by exactly one (sequence,
// slot); a slot of length L owns exactly ceil(L / block_size) blocks; used + free = num_blocks.
// Sequence ids are >= 0 (-1 marks a free block). A sequence becomes known with its first non-empty
// append and stays known (even truncated to 0 tokens) until release(). Invalid arguments (slot out
// of range, negative sizes, truncating beyond the length, locating beyond it) throw mor::Error.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace mor::engine {

class KvBlockManager {
 public:
  KvBlockManager(int64_t num_slots, int64_t block_size, int64_t num_blocks);

  // Blocks a budget of `memory_bytes` holds at `bytes_per_block` each (at least 0).
  static int64_t blocks_for_budget(int64_t memory_bytes, int64_t bytes_per_block);

  int64_t num_slots() const { return num_slots_; }
  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(owner_.size()); }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_blocks() const { return num_blocks() - free_blocks(); }

  // New blocks that growing (seq, slot) by n tokens would take (seq may be unknown: 0 tokens).
  int64_t blocks_needed(int64_t seq, int64_t slot, int64_t n) const;
  // Grows (seq, slot) by n tokens; false and no change when there are not enough free blocks.
  bool append(int64_t seq, int64_t slot, int64_t n);
  // Shrinks (seq, slot) to `length` tokens (<= current), freeing blocks no longer needed.
  void truncate(int64_t seq, int64_t slot, int64_t length);

  int64_t length(int64_t seq, int64_t slot) const;                     // 0 for unknown
  const std::vector<int32_t>& table(int64_t seq, int64_t slot) const;  // empty for unknown
  // Block id and offset of token k (< length) of (seq, slot).
  std::pair<int32_t, int32_t> locate(int64_t seq, int64_t slot, int64_t k) const;

  bool has(int64_t seq) const;
  std::vector<int64_t> sequences() const;  // ascending
  void release(int64_t seq);               // every block of seq back to the pool; unknown: no-op

  // Throws std::logic_error describing the first violated invariant.
  void check_invariants() const;

 private:
  struct Slot {
    int64_t length = 0;
    std::vector<int32_t> blocks;
  };
  void check_slot(int64_t slot) const;
  const Slot* find(int64_t seq, int64_t slot) const;  // nullptr for an unknown sequence
  int64_t num_slots_, block_size_;
  std::vector<int64_t> owner_;  // block -> seq (-1: free)
  std::vector<int32_t> free_;   // LIFO free list
  std::map<int64_t, std::vector<Slot>> seqs_;
};

}  // namespace mor::engine
