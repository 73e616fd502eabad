// Engine: scheduler + paged K/V + forward_cached + sampling, behind engine::Service (see engine.h).
#include "mor/engine/engine.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>

#include "mor/core/error.h"
#include "mor/model/decode.h"
#include "mor/model/model.h"

namespace mor::engine {

// model::KvCache over the block pool: token t of (seq, slot) lives in row
// table[t / block_size] * block_size + t % block_size of one [blocks * block_size, kv_heads, D]
// tensor pair shared by every slot -- viewed as [blocks, block_size, kv_heads, D] by a paged
// attention kernel, which reads the blocks in place.
class PagedKvCache final : public model::KvCache {
 public:
  PagedKvCache(KvBlockManager& kv, int64_t kv_heads, int64_t head_dim, at::ScalarType dtype, at::Device device)
      : kv_(kv) {
    const auto opts = at::TensorOptions().dtype(dtype).device(device);
    k_ = at::zeros({kv.num_blocks() * kv.block_size(), kv_heads, head_dim}, opts);
    v_ = at::zeros_like(k_);
    const std::vector<int64_t> blocked = {kv.num_blocks(), kv.block_size(), kv_heads, head_dim};
    k_blocks_ = k_.view(blocked);
    v_blocks_ = v_.view(blocked);
  }

  bool paged(Paged* out) const override {
    out->k_pool = k_blocks_;
    out->v_pool = v_blocks_;
    out->block_size = kv_.block_size();
    return true;
  }
  int64_t length(int64_t seq, int64_t slot) const override { return kv_.length(seq, slot); }
  std::vector<int32_t> blocks(int64_t seq, int64_t slot) const override { return kv_.table(seq, slot); }

  std::pair<at::Tensor, at::Tensor> read(int64_t seq, int64_t slot) override {
    const int64_t len = kv_.length(seq, slot);
    if (len == 0) return {};
    const at::Tensor idx = rows(seq, slot, 0, len);
    return {k_.index_select(0, idx), v_.index_select(0, idx)};
  }

  void append(int64_t seq, int64_t slot, const at::Tensor& k, const at::Tensor& v) override {
    const int64_t old = kv_.length(seq, slot), n = k.size(0);
    MOR_CHECK(kv_.append(seq, slot, n), "internal: K/V append beyond the scheduler's reservation (sequence ", seq,
              ", slot ", slot, ")");
    const at::Tensor idx = rows(seq, slot, old, n);
    k_.index_copy_(0, idx, k.to(k_.scalar_type()));
    v_.index_copy_(0, idx, v.to(v_.scalar_type()));
  }

 private:
  at::Tensor rows(int64_t seq, int64_t slot, int64_t begin, int64_t count) const {
    const auto& table = kv_.table(seq, slot);
    const int64_t bs = kv_.block_size();
    std::vector<int64_t> r(static_cast<size_t>(count));
    for (int64_t t = 0; t < count; ++t) {
      const int64_t p = begin + t;
      r[static_cast<size_t>(t)] = static_cast<int64_t>(table[static_cast<size_t>(p / bs)]) * bs + p % bs;
    }
    return at::tensor(r, at::kLong).to(k_.device());
  }

  KvBlockManager& kv_;
  at::Tensor k_, v_;
  at::Tensor k_blocks_, v_blocks_;  // the same storage, [blocks, block_size, kv_heads, D]
};

struct Engine::Request {
  int64_t id = 0;
  CompletionRequest req;
  Sampler sampler;
  Detokenizer detok;
  StopMatcher stop;
  int64_t generated = 0;
  std::vector<TokenInfo> prompt_info;  // echo
  at::Tensor prev_logits;                // echo + logprobs: log-softmax of the row before a chunk
  std::mutex m;
  std::condition_variable cv;
  std::deque<TokenInfo> events;
  bool done = false;
  std::string reason, error;
  std::atomic<bool> cancelled{false};
  RequestTiming timing;

  Request(int64_t id_, CompletionRequest r, uint64_t seed, const io::Tokenizer& tok)
      : id(id_), req(std::move(r)), sampler(req.sampling, seed), detok(tok), stop(req.sampling.stop) {}
};

// A chunk between engine steps (depth-wise batching): its plan item, its model state, and the
// worst-case blocks reserved for it at planning (with the blocks its sequence held then).
struct Engine::Flight {
  StepItem item;
  model::FlightChunk chunk;
  int64_t demand = 0, held = 0;
  bool need_all = false;  // echo + logprobs: logits of every row
};

namespace {

class Stream final : public CompletionStream {
 public:
  explicit Stream(std::shared_ptr<Engine::Request> r) : r_(std::move(r)) {}
  ~Stream() override { cancel(); }
  std::vector<TokenInfo> prompt_tokens() override {
    std::unique_lock<std::mutex> lock(r_->m);
    // The prompt's logprobs are known once its prefill is done (or the request ended).
    r_->cv.wait(lock, [&] { return r_->done || !r_->events.empty() || prompt_ready(); });
    return r_->prompt_info;
  }
  bool next(TokenInfo& token) override {
    std::unique_lock<std::mutex> lock(r_->m);
    r_->cv.wait(lock, [&] { return r_->done || !r_->events.empty(); });
    if (r_->events.empty()) return false;
    token = std::move(r_->events.front());
    r_->events.pop_front();
    return true;
  }
  std::string finish_reason() const override {
    std::lock_guard<std::mutex> lock(r_->m);
    return r_->reason;
  }
  std::string error() const override {
    std::lock_guard<std::mutex> lock(r_->m);
    return r_->error;
  }
  void cancel() override { r_->cancelled = true; }

 private:
  bool prompt_ready() const {
    return !r_->req.echo || static_cast<int64_t>(r_->prompt_info.size()) == static_cast<int64_t>(r_->req.prompt.size());
  }
  std::shared_ptr<Engine::Request> r_;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

TokenInfo token_info(const io::Tokenizer& tok, int32_t id) {
  TokenInfo t;
  t.id = id;
  t.text = id < tok.vocab_size() ? tok.decode(std::vector<int32_t>{id}) : std::string();
  return t;
}

}  // namespace

Engine::Engine(std::shared_ptr<const model::MoRModel> model, io::Tokenizer tokenizer, std::string model_name,
               std::optional<int32_t> eos, EngineOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), model_name_(std::move(model_name)), eos_(eos),
      options_(options) {
  const model::CacheLayout& layout = model_->cache_slots();
  MOR_CHECK(options_.kv_block_size > 0, "engine.kv_block_size must be positive, got ", options_.kv_block_size);
  MOR_CHECK(options_.kv_memory_mb > 0, "engine.kv_memory_mb must be positive, got ", options_.kv_memory_mb);
  const int64_t elem = static_cast<int64_t>(c10::elementSize(model_->dtype()));
  bytes_per_block_ = options_.kv_block_size * layout.bytes_per_token_slot(elem);
  const int64_t blocks = options_.kv_blocks > 0
                             ? options_.kv_blocks
                             : KvBlockManager::blocks_for_budget(options_.kv_memory_mb << 20, bytes_per_block_);
  MOR_CHECK(blocks > 0, "engine.kv_memory_mb ", options_.kv_memory_mb, " holds no K/V block of ", bytes_per_block_,
            " bytes");
  kv_ = std::make_unique<KvBlockManager>(layout.num_slots, options_.kv_block_size, blocks);
  cache_ = std::make_unique<PagedKvCache>(*kv_, layout.kv_heads, layout.head_dim, model_->dtype(), model_->device());
  const int64_t slots = layout.num_slots;
  // Worst case: every new token reaches every slot.
  KvDemand demand = [slots](const KvBlockManager& kv, int64_t seq, int64_t n) {
    int64_t need = 0;
    for (int64_t s = 0; s < slots; ++s) need += kv.blocks_needed(seq, s, n);
    return need;
  };
  scheduler_ = std::make_unique<Scheduler>(options_.scheduler, *kv_, demand);
  stats_.slot_tokens.assign(static_cast<size_t>(slots), 0);
  const int64_t n_r = model_->layout().num_recursions;
  totals_.depth_histogram.assign(static_cast<size_t>(n_r + 1), 0);
  totals_.kv_blocks_total = blocks;
  totals_.kv_bytes_total = blocks * bytes_per_block_;
}

Engine::~Engine() { stop(); }

int64_t Engine::max_context() const { return model_->config().max_seq_len; }

std::unique_ptr<CompletionStream> Engine::submit(CompletionRequest request) {
  validate(request.sampling);
  MOR_CHECK(!request.prompt.empty(), "prompt: must not be empty");
  const int64_t vocab = model_->config().vocab_size;
  for (int32_t t : request.prompt) {
    MOR_CHECK(t >= 0 && t < vocab, "prompt: token id ", t, " is outside the vocabulary [0, ", vocab, ")");
  }
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.sampling.max_tokens;
  MOR_CHECK(total <= max_context(), "max_tokens: the prompt (", request.prompt.size(), " tokens) plus max_tokens (",
            request.sampling.max_tokens, ") exceeds the model's context of ", max_context(), " tokens");
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t id = next_id_++;
  const uint64_t seed = request.sampling.seed.value_or(options_.seed + static_cast<uint64_t>(id));
  auto r = std::make_shared<Request>(id, std::move(request), seed, tokenizer_);
  r->timing.id = id;
  r->timing.prompt_tokens = static_cast<int64_t>(r->req.prompt.size());
  r->timing.submitted = now_s();
  const Scheduler::Admit admit =
      scheduler_->add(id, r->req.prompt, std::max<int64_t>(1, r->req.sampling.max_tokens));
  ++totals_.requests_total;
  if (admit == Scheduler::Admit::kQueueFull) {
    ++totals_.requests_rejected;
    throw QueueFull("the request queue is full (" + std::to_string(options_.scheduler.max_queue) + " waiting)");
  }
  if (admit == Scheduler::Admit::kTooLong) {
    ++totals_.requests_rejected;
    fail("prompt: ", r->req.prompt.size(), " tokens need more K/V blocks than the cache holds (engine.kv_memory_mb)");
  }
  if (r->req.echo) {
    // The first prompt token has no logprob; the rest arrive with the prefill.
    r->prompt_info.push_back(token_info(tokenizer_, r->req.prompt[0]));
  }
  totals_.prompt_tokens_total += static_cast<int64_t>(r->req.prompt.size());
  requests_[id] = r;
  wake_.notify_all();
  return std::make_unique<Stream>(r);
}

void Engine::finish(Request& r, const std::string& reason, const std::string& error) {
  r.timing.generated = r.generated;
  r.timing.finished = now_s();
  stats_.finished.push_back(r.timing);
  {
    std::lock_guard<std::mutex> lock(r.m);
    const std::string rest = r.stop.flush();
    if (!rest.empty() && !r.events.empty()) r.events.back().text += rest;
    r.done = true;
    r.reason = reason;
    r.error = error;
  }
  r.cv.notify_all();
}

bool Engine::step() {
  std::lock_guard<std::mutex> lock(mutex_);
  // Cancelled requests leave first (also mid-flight: their chunk is dropped).
  for (auto it = requests_.begin(); it != requests_.end();) {
    if (it->second->cancelled) {
      flights_.erase(it->first);
      scheduler_->abort(it->first);
      finish(*it->second, "abort", "cancelled");
      it = requests_.erase(it);
    } else {
      ++it;
    }
  }
  // Blocks the in-flight chunks may still append: their worst case at planning minus what they
  // appended since.
  auto held = [&](int64_t seq) {
    int64_t n = 0;
    for (int64_t s = 0; s < kv_->num_slots(); ++s) n += static_cast<int64_t>(kv_->table(seq, s).size());
    return n;
  };
  auto demand = [&](int64_t seq, int64_t n) {
    int64_t need = 0;
    for (int64_t s = 0; s < kv_->num_slots(); ++s) need += kv_->blocks_needed(seq, s, n);
    return need;
  };
  std::map<int64_t, int64_t> in_flight;
  for (const auto& [id, f] : flights_) in_flight[id] = std::max<int64_t>(0, f->demand - (held(id) - f->held));
  const StepPlan plan = scheduler_->plan(in_flight);
  stats_.preemptions += static_cast<int64_t>(plan.preempted.size());
  for (int64_t id : plan.finished) {  // outgrew the whole K/V pool: ends where it stands
    scheduler_->abort(id);
    if (auto it = requests_.find(id); it != requests_.end()) {
      finish(*it->second, "length");
      requests_.erase(it);
    }
  }
  if (plan.empty() && flights_.empty()) return false;
  ++stats_.steps;

  std::vector<model::FlightChunk*> entering;
  for (const StepItem& item : plan.items) {
    const Sequence& seq = scheduler_->sequence(item.seq);
    auto f = std::make_unique<Flight>();
    f->item = item;
    f->demand = demand(item.seq, item.count);
    f->held = held(item.seq);
    f->chunk.seq = item.seq;
    f->chunk.start = item.begin;
    f->chunk.tokens.assign(seq.tokens.begin() + item.begin, seq.tokens.begin() + item.begin + item.count);
    const Request& r = *requests_.at(item.seq);
    f->need_all = r.req.echo && r.req.sampling.logprobs > 0 && item.begin < seq.prompt_len;
    if (item.begin < seq.prompt_len) {
      stats_.prefill_tokens += item.count;
    } else {
      stats_.decode_tokens += item.count;
    }
    entering.push_back(&f->chunk);
    flights_[item.seq] = std::move(f);
  }
  // Enter the new chunks, then one recursion for every chunk in the block -- new ones at recursion
  // 0 together with earlier ones at deeper recursions (depth-wise batching) -- or, without
  // depth-wise batching, run the new chunks through all their recursions now.
  std::vector<Flight*> exited;
  std::vector<at::Tensor> exit_logits;
  try {
    if (!entering.empty()) model_->decode_enter(entering, *cache_);
    std::vector<model::FlightChunk*> in_block;
    std::set<int64_t> depths;
    for (auto& [id, f] : flights_) {
      if (f->chunk.in_block) {
        in_block.push_back(&f->chunk);
        depths.insert(f->chunk.next_r);
      }
    }
    if (options_.depth_wise_batching) {
      if (!in_block.empty()) {
        ++stats_.block_calls;
        if (depths.size() > 1) ++stats_.mixed_depth_calls;
        model_->decode_recursion(in_block, *cache_);
      }
    } else {
      for (;;) {
        std::vector<model::FlightChunk*> still;
        for (auto* c : in_block) {
          if (c->in_block) still.push_back(c);
        }
        if (still.empty()) break;
        ++stats_.block_calls;
        model_->decode_recursion(still, *cache_);
        in_block = still;
      }
    }
    std::vector<model::FlightChunk*> all_rows, last_rows;
    std::vector<Flight*> all_f, last_f;
    for (auto& [id, f] : flights_) {
      if (f->chunk.in_block) continue;
      (f->need_all ? all_rows : last_rows).push_back(&f->chunk);
      (f->need_all ? all_f : last_f).push_back(f.get());
    }
    auto run_exit = [&](std::vector<model::FlightChunk*>& chunks, std::vector<Flight*>& fs, bool last_only) {
      if (chunks.empty()) return;
      const at::Tensor logits = model_->decode_exit(chunks, *cache_, last_only).to(at::kCPU, at::kFloat).contiguous();
      int64_t offset = 0;
      for (Flight* f : fs) {
        const int64_t rows = last_only ? 1 : static_cast<int64_t>(f->chunk.tokens.size());
        exited.push_back(f);
        exit_logits.push_back(logits.narrow(0, offset, rows));
        offset += rows;
      }
    };
    run_exit(all_rows, all_f, false);
    run_exit(last_rows, last_f, true);
  } catch (const std::exception& e) {
    // An engine failure ends the requests in flight; the engine keeps serving the others.
    for (auto& [id, f] : flights_) {
      scheduler_->abort(id);
      if (auto it = requests_.find(id); it != requests_.end()) {
        finish(*it->second, "abort", e.what());
        requests_.erase(it);
      }
    }
    flights_.clear();
    return true;
  }
  stats_.peak_kv_blocks = std::max(stats_.peak_kv_blocks, kv_->used_blocks());
  const double t_now = now_s();

  for (size_t c = 0; c < exited.size(); ++c) {
    Flight& fl = *exited[c];
    const StepItem item = fl.item;
    const at::Tensor& logits = exit_logits[c];
    const int64_t vocab = logits.size(1);
    for (size_t s = 0; s < fl.chunk.slot_appends.size(); ++s) stats_.slot_tokens[s] += fl.chunk.slot_appends[s];
    const int64_t d = fl.chunk.depth.back();
    const int64_t row_last = logits.size(0) - 1;
    flights_.erase(item.seq);  // `fl` is gone from here on
    Request& r = *requests_.at(item.seq);
    const Sequence& seq = scheduler_->sequence(item.seq);
    // Echo with logprobs: prompt token p's logprob comes from the row of position p - 1.
    if (r.req.echo && r.req.sampling.logprobs > 0 && item.begin < seq.prompt_len) {
      for (int64_t p = std::max<int64_t>(1, item.begin); p < std::min(item.begin + item.count + 1, seq.prompt_len); ++p) {
        const int64_t row = p - 1 - item.begin;
        if (static_cast<int64_t>(r.prompt_info.size()) > p) continue;  // already known (recompute after preemption)
        std::span<const float> lg;
        std::vector<float> prev;
        if (p - 1 < item.begin) {
          if (!r.prev_logits.defined()) continue;
          prev.assign(r.prev_logits.data_ptr<float>(), r.prev_logits.data_ptr<float>() + vocab);
          lg = prev;
        } else {
          lg = std::span<const float>(logits[row].data_ptr<float>(), static_cast<size_t>(vocab));
        }
        const int32_t tok = r.req.prompt[static_cast<size_t>(p)];
        const TokenLogprobs lp = token_logprobs(lg, tok, r.req.sampling.logprobs);
        TokenInfo info = token_info(tokenizer_, tok);
        info.logprob = lp.logprob;
        info.top = lp.top;
        std::lock_guard<std::mutex> rl(r.m);
        r.prompt_info.push_back(std::move(info));
      }
      r.prev_logits = logits[logits.size(0) - 1].clone();
      r.cv.notify_all();
    }
    if (!item.samples) {
      scheduler_->complete(item, std::nullopt, false);
      continue;
    }
    if (r.req.sampling.max_tokens == 0) {  // echo / scoring only: done once the prompt is computed
      scheduler_->abort(item.seq);
      finish(r, "length");
      requests_.erase(item.seq);
      continue;
    }
    const std::span<const float> lg(logits[row_last].data_ptr<float>(), static_cast<size_t>(vocab));
    const int32_t token = r.sampler.sample(lg);
    if (r.generated == 0) r.timing.first_token = t_now;
    ++r.generated;
    ++totals_.generated_tokens_total;
    totals_.depth_histogram[static_cast<size_t>(
        std::clamp<int64_t>(d, 0, static_cast<int64_t>(totals_.depth_histogram.size()) - 1))]++;
    rate_window_.emplace_back(t_now, 1);
    const bool eos = eos_ && token == *eos_ && !r.req.sampling.ignore_eos;
    TokenInfo info;
    info.id = token;
    info.depth = d;
    if (r.req.sampling.logprobs > 0) {
      const TokenLogprobs lp = token_logprobs(lg, token, r.req.sampling.logprobs);
      info.logprob = lp.logprob;
      info.top = lp.top;
    }
    if (!eos && token < tokenizer_.vocab_size()) info.text = r.stop.feed(r.detok.push(token));
    const bool stopped = eos || r.stop.stopped();
    const bool length = r.generated >= r.req.sampling.max_tokens ||
                        static_cast<int64_t>(seq.tokens.size()) + 1 >= model_->config().max_seq_len;
    {
      std::lock_guard<std::mutex> rl(r.m);
      if (!eos) r.events.push_back(std::move(info));
    }
    r.cv.notify_all();
    const bool finished = stopped || length;
    scheduler_->complete(item, token, finished);
    if (finished) {
      if (!stopped) {
        const std::string rest = r.detok.flush();
        if (!rest.empty()) {
          const std::string tail = r.stop.feed(rest);
          std::lock_guard<std::mutex> rl(r.m);
          if (!tail.empty() && !r.events.empty()) r.events.back().text += tail;
        }
      }
      finish(r, stopped ? "stop" : "length");
      scheduler_->abort(item.seq);  // forget the finished sequence
      requests_.erase(item.seq);
    }
  }
  while (!rate_window_.empty() && rate_window_.front().first < t_now - 10.0) rate_window_.pop_front();
  return true;
}

void Engine::run_until_idle() {
  while (step()) {
  }
}

void Engine::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] {
    const at::NoGradGuard no_grad;
    while (running_) {
      if (!step()) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait_for(lock, std::chrono::milliseconds(20), [&] { return !running_ || !scheduler_->idle(); });
      }
    }
  });
}

void Engine::stop() {
  if (!running_.exchange(false)) return;
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [id, r] : requests_) {
    scheduler_->abort(id);
    finish(*r, "abort", "the engine stopped");
  }
  requests_.clear();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

ServiceMetrics Engine::metrics() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ServiceMetrics m = totals_;
  m.waiting = scheduler_->waiting();
  m.running = scheduler_->running();
  m.kv_blocks_used = kv_->used_blocks();
  m.kv_bytes_used = kv_->used_blocks() * bytes_per_block_;
  if (!rate_window_.empty()) {
    const double span = std::max(1.0, now_s() - rate_window_.front().first);
    m.generated_tokens_per_s = static_cast<double>(rate_window_.size()) / span;
  }
  return m;
}

}  // namespace mor::engine
