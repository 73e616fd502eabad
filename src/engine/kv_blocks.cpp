// Paged KV block bookkeeping (see kv_blocks.h): a LIFO free list of block ids and, per sequence, one
// block table per cache slot. Only decides which block holds which token; holds no tensors.
#include "mor/engine/kv_blocks.h"

#include <limits>
#include <stdexcept>

#include "mor/core/error.h"

namespace mor::engine {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

const std::vector<int32_t> kNoBlocks;

template <typename... Args>
[[noreturn]] void broken(Args&&... args) {
  throw std::logic_error(mor::detail::concat("kv blocks: invariant violated: ", std::forward<Args>(args)...));
}

}  // namespace

KvBlockManager::KvBlockManager(int64_t num_slots, int64_t block_size, int64_t num_blocks)
    : num_slots_(num_slots), block_size_(block_size) {
  MOR_CHECK(num_slots > 0, "kv blocks: num_slots must be positive, got ", num_slots);
  MOR_CHECK(block_size > 0, "kv blocks: block_size must be positive, got ", block_size);
  MOR_CHECK(num_blocks >= 0 && num_blocks <= std::numeric_limits<int32_t>::max(),
            "kv blocks: num_blocks must be in [0, 2^31), got ", num_blocks);
  owner_.assign(static_cast<size_t>(num_blocks), -1);
  free_.reserve(static_cast<size_t>(num_blocks));
  // LIFO: block 0 is handed out first.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t KvBlockManager::blocks_for_budget(int64_t memory_bytes, int64_t bytes_per_block) {
  MOR_CHECK(bytes_per_block > 0, "kv blocks: bytes per block must be positive, got ", bytes_per_block);
  return memory_bytes <= 0 ? 0 : memory_bytes / bytes_per_block;
}

void KvBlockManager::check_slot(int64_t slot) const {
  MOR_CHECK(slot >= 0 && slot < num_slots_, "kv blocks: cache slot ", slot, " out of range [0, ", num_slots_,
            ")");
}

const KvBlockManager::Slot* KvBlockManager::find(int64_t seq, int64_t slot) const {
  check_slot(slot);
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? nullptr : &it->second[static_cast<size_t>(slot)];
}

int64_t KvBlockManager::blocks_needed(int64_t seq, int64_t slot, int64_t n) const {
  MOR_CHECK(n >= 0, "kv blocks: cannot grow by a negative number of tokens (", n, ")");
  const Slot* s = find(seq, slot);
  int64_t length = s ? s->length : 0;
  int64_t held = s ? static_cast<int64_t>(s->blocks.size()) : 0;
  return ceil_div(length + n, block_size_) - held;
}

bool KvBlockManager::append(int64_t seq, int64_t slot, int64_t n) {
  MOR_CHECK(seq >= 0, "kv blocks: sequence ids must be >= 0, got ", seq);
  int64_t need = blocks_needed(seq, slot, n);
  if (n == 0) return true;
  if (need > free_blocks()) return false;
  auto& slots = seqs_.try_emplace(seq, static_cast<size_t>(num_slots_)).first->second;
  Slot& s = slots[static_cast<size_t>(slot)];
  for (int64_t i = 0; i < need; ++i) {
    int32_t block = free_.back();
    free_.pop_back();
    owner_[static_cast<size_t>(block)] = seq;
    s.blocks.push_back(block);
  }
  s.length += n;
  return true;
}

void KvBlockManager::truncate(int64_t seq, int64_t slot, int64_t length) {
  MOR_CHECK(length >= 0, "kv blocks: cannot truncate to a negative length (", length, ")");
  const Slot* found = find(seq, slot);
  int64_t current = found ? found->length : 0;
  MOR_CHECK(length <= current, "kv blocks: cannot truncate sequence ", seq, " slot ", slot, " to ", length,
            " tokens: it holds ", current);
  if (!found) return;  // unknown sequence truncated to 0: nothing to do
  Slot& s = seqs_.at(seq)[static_cast<size_t>(slot)];
  auto keep = static_cast<size_t>(ceil_div(length, block_size_));
  while (s.blocks.size() > keep) {
    int32_t block = s.blocks.back();
    s.blocks.pop_back();
    owner_[static_cast<size_t>(block)] = -1;
    free_.push_back(block);
  }
  s.length = length;
}

int64_t KvBlockManager::length(int64_t seq, int64_t slot) const {
  const Slot* s = find(seq, slot);
  return s ? s->length : 0;
}

const std::vector<int32_t>& KvBlockManager::table(int64_t seq, int64_t slot) const {
  const Slot* s = find(seq, slot);
  return s ? s->blocks : kNoBlocks;
}

std::pair<int32_t, int32_t> KvBlockManager::locate(int64_t seq, int64_t slot, int64_t k) const {
  const Slot* s = find(seq, slot);
  int64_t len = s ? s->length : 0;
  MOR_CHECK(k >= 0 && k < len, "kv blocks: token ", k, " of sequence ", seq, " slot ", slot,
            " is out of range (length ", len, ")");
  return {s->blocks[static_cast<size_t>(k / block_size_)], static_cast<int32_t>(k % block_size_)};
}

bool KvBlockManager::has(int64_t seq) const { return seqs_.count(seq) > 0; }

std::vector<int64_t> KvBlockManager::sequences() const {
  std::vector<int64_t> ids;
  ids.reserve(seqs_.size());
  for (const auto& [id, slots] : seqs_) ids.push_back(id);
  return ids;
}

void KvBlockManager::release(int64_t seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  for (Slot& s : it->second) {
    // Reverse order: the next allocation reuses the table's first block first.
    for (auto b = s.blocks.rbegin(); b != s.blocks.rend(); ++b) {
      owner_[static_cast<size_t>(*b)] = -1;
      free_.push_back(*b);
    }
  }
  seqs_.erase(it);
}

void KvBlockManager::check_invariants() const {
  const int64_t n = num_blocks();
  enum : char { kUnseen, kFree, kOwned };
  std::vector<char> seen(static_cast<size_t>(n), kUnseen);
  for (int32_t b : free_) {
    if (b < 0 || b >= n) broken("free list holds block ", b, " out of range [0, ", n, ")");
    if (seen[static_cast<size_t>(b)] != kUnseen) broken("block ", b, " is on the free list twice");
    seen[static_cast<size_t>(b)] = kFree;
    if (owner_[static_cast<size_t>(b)] != -1) {
      broken("block ", b, " is free but owned by sequence ", owner_[static_cast<size_t>(b)]);
    }
  }
  for (const auto& [seq, slots] : seqs_) {
    if (seq < 0) broken("negative sequence id ", seq);
    if (static_cast<int64_t>(slots.size()) != num_slots_) {
      broken("sequence ", seq, " has ", slots.size(), " slots, expected ", num_slots_);
    }
    for (size_t slot = 0; slot < slots.size(); ++slot) {
      const Slot& s = slots[slot];
      if (s.length < 0) broken("sequence ", seq, " slot ", slot, " has negative length ", s.length);
      int64_t expected = ceil_div(s.length, block_size_);
      if (static_cast<int64_t>(s.blocks.size()) != expected) {
        broken("sequence ", seq, " slot ", slot, " of length ", s.length, " owns ", s.blocks.size(),
               " blocks, expected ", expected);
      }
      for (int32_t b : s.blocks) {
        if (b < 0 || b >= n) broken("sequence ", seq, " slot ", slot, " holds block ", b, " out of range");
        if (seen[static_cast<size_t>(b)] == kFree) broken("block ", b, " is both free and owned by ", seq);
        if (seen[static_cast<size_t>(b)] == kOwned) broken("block ", b, " is owned twice (again by ", seq, ")");
        seen[static_cast<size_t>(b)] = kOwned;
        if (owner_[static_cast<size_t>(b)] != seq) {
          broken("block ", b, " is in a table of sequence ", seq, " but its owner is ",
                 owner_[static_cast<size_t>(b)]);
        }
      }
    }
  }
  for (int64_t b = 0; b < n; ++b) {
    if (seen[static_cast<size_t>(b)] == kUnseen) {
      broken("block ", b, " is neither free nor in any table (owner ", owner_[static_cast<size_t>(b)], ")");
    }
  }
}

}  // namespace mor::engine
