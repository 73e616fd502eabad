// Incremental (cached) inference: new tokens of several sequences in one call, attending to K/V
// kept in an external cache, with the same causal routing as MoRModel::forward -- so decoding token
// by token, or prefilling in chunks, gives the logits and depths of a full causal forward.
//
// Cache slots: K/V are written per (sequence, slot), where a slot is one place a layer stores K/V:
// each prelude and coda layer, and each (recursion r, block layer i). A token appends to a block
// slot only when it is active at that recursion (recursion-wise caching), so deeper slots hold
// fewer tokens. With KV sharing only recursion 0's block slots exist; recursions r > 0 attend to
// them (keys at positions <= the query's). Within a slot tokens are kept in position order.
//
// Routing at inference is causal: expert-choice tokens continue when the router (or auxiliary
// router) probability reaches the threshold, or always when the recursion's capacity is 1;
// token-choice picks the depth from the router at the first recursion. The non-causal top-k of
// training cannot be decoded incrementally: decoding is causal whatever model.inference_routing says.
//
// Within one call, the tokens of all chunks that are active at recursion r go through the shared
// block together (one batched call per block layer), whatever sequence they belong to.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "mor/config/config.h"

namespace mor::model {

struct CacheLayout {
  int64_t num_slots = 0;
  std::vector<int64_t> write_slot;      // per unrolled layer: the slot it appends to (-1: none)
  std::vector<int64_t> read_slot;       // per unrolled layer: the slot it attends over
  std::vector<int64_t> slot_recursion;  // per slot: its recursion, -1 for prelude/coda layers
  std::vector<int64_t> slot_layer;      // per slot: the unrolled layer that writes it
  int64_t kv_heads = 0, head_dim = 0;
  // Bytes one token takes in one slot (K and V) at `dtype_bytes` per element.
  int64_t bytes_per_token_slot(int64_t dtype_bytes) const { return 2 * kv_heads * head_dim * dtype_bytes; }
};
CacheLayout cache_layout(const config::ModelConfig& config);

// Where the model reads and appends K/V. Implementations: ContiguousKvCache (below), the engine's
// paged cache.
class KvCache {
 public:
  virtual ~KvCache() = default;
  // Every cached K and V of `seq` in `slot`, [len, kv_heads, head_dim] each (len may be 0), on the
  // model's device in its dtype.
  virtual std::pair<at::Tensor, at::Tensor> read(int64_t seq, int64_t slot) = 0;
  // Appends k, v [n, kv_heads, head_dim] (n >= 1).
  virtual void append(int64_t seq, int64_t slot, const at::Tensor& k, const at::Tensor& v) = 0;

  // Paged storage, for caches that have it (the engine's): the pools and block tables a paged
  // attention kernel reads directly, without gathering. Default: not paged.
  struct Paged {
    at::Tensor k_pool, v_pool;  // [num_blocks, block_size, kv_heads, head_dim]
    int64_t block_size = 0;
  };
  virtual bool paged(Paged* out) const { return false; }
  // Number of cached tokens of (seq, slot) and their block ids (paged caches only).
  virtual int64_t length(int64_t seq, int64_t slot) const { return 0; }
  virtual std::vector<int32_t> blocks(int64_t seq, int64_t slot) const { return {}; }
};

// One growing tensor pair per (sequence, slot): tests and simple single-request decoding.
class ContiguousKvCache final : public KvCache {
 public:
  std::pair<at::Tensor, at::Tensor> read(int64_t seq, int64_t slot) override;
  void append(int64_t seq, int64_t slot, const at::Tensor& k, const at::Tensor& v) override;
  int64_t length(int64_t seq, int64_t slot) const override;
  void drop(int64_t seq);

 private:
  std::map<std::pair<int64_t, int64_t>, std::pair<at::Tensor, at::Tensor>> kv_;
};

// New tokens of one sequence: positions start .. start + tokens.size() - 1, where `start` is the
// number of tokens of this sequence already processed through the cache.
struct DecodeChunk {
  int64_t seq = 0;
  std::vector<int64_t> tokens;
  int64_t start = 0;
};

struct DecodeOptions {
  bool last_only = false;  // logits of each chunk's last token only
};

struct DecodeOutput {
  at::Tensor logits;             // [N, V] (N = all new tokens in chunk order, or one per chunk)
  at::Tensor depth;              // [M] int64 recursions per new token (all new tokens, chunk order)
  std::vector<int64_t> offsets;  // chunk c's tokens are rows [offsets[c], offsets[c + 1]) of depth
  // Tokens appended per slot in this call (for exact KV accounting).
  std::vector<int64_t> slot_appends;
};

// Depth-wise batching: the same computation split into stages, so that a caller can keep chunks
// "in flight" between calls and put chunks at DIFFERENT recursions into one block call
// (MoRModel::decode_enter / decode_recursion / decode_exit; forward_cached is enter, recursions
// until no chunk is left in the block, exit). A chunk's tokens move through the recursions
// together (a token attends to the K/V its chunk-mates wrote at the same recursion); chunks of
// different sequences are independent, so any mix of their recursions can share a call.
struct FlightChunk {
  int64_t seq = 0;
  int64_t start = 0;            // position of tokens[0]
  std::vector<int64_t> tokens;
  // State, set by decode_enter and advanced by decode_recursion:
  at::Tensor h;                 // [n, d] hidden state (token-choice: the block stream `cur`)
  at::Tensor x0, gate;          // token-choice: block input [n, d] and gates [n, 1]
  std::vector<int64_t> choice;  // token-choice: chosen recursion count - 1 per token
  std::vector<int64_t> active;  // expert-choice: tokens still recursing (indices into tokens)
  std::vector<int64_t> r0_pos;  // positions this chunk wrote to recursion-0 slots (KV sharing)
  std::vector<int64_t> depth;   // recursions received so far, per token
  int64_t next_r = 0;           // the recursion decode_recursion runs next
  bool in_block = false;        // recursions left to run
  std::vector<int64_t> slot_appends;  // tokens this chunk appended per slot
};

}  // namespace mor::model
