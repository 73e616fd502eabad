// What the HTTP front end needs from an inference engine: submit a tokenized completion request,
// stream its tokens, read metrics. The engine implements it; tests use a fake. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mor/engine/sampling.h"

namespace mor::io {
class Tokenizer;
}

namespace mor::engine {

struct CompletionRequest {
  std::vector<int32_t> prompt;  // token ids (non-empty)
  SamplingParams sampling;
  bool echo = false;            // also report the prompt tokens (with logprobs when asked)
};

struct TokenInfo {
  int32_t id = 0;
  std::string text;                            // the token's text (UTF-8 bytes as decoded)
  std::optional<float> logprob;                // absent for the first prompt token
  std::vector<std::pair<int32_t, float>> top;  // sampling.logprobs alternatives
  // Recursions of the position whose logits produced this token (the compute spent predicting it;
  // 0 without recursion, and 0 for echoed prompt tokens).
  int64_t depth = 0;
};

// Thrown by submit() when the waiting queue is full (HTTP 429).
class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class CompletionStream {
 public:
  virtual ~CompletionStream() = default;
  // With echo: the prompt tokens (logprob of each given the ones before; the first has none).
  virtual std::vector<TokenInfo> prompt_tokens() = 0;
  // Blocks until the next generated token (true) or the end of generation (false). Text already
  // respects stop strings (the text of the token that completes a stop string is cut before it).
  virtual bool next(TokenInfo& token) = 0;
  // After next() returned false: "stop" (EOS or a stop string), "length" (max_tokens or context),
  // "abort" (cancelled or an engine error; error() says which).
  virtual std::string finish_reason() const = 0;
  virtual std::string error() const { return {}; }
  virtual void cancel() = 0;  // the client went away: stop generating, free resources
};

struct ServiceMetrics {
  int64_t waiting = 0, running = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t kv_bytes_used = 0, kv_bytes_total = 0;
  int64_t requests_total = 0, requests_rejected = 0;
  int64_t prompt_tokens_total = 0, generated_tokens_total = 0;
  double generated_tokens_per_s = 0.0;   // recent rate
  std::vector<int64_t> depth_histogram;  // generated tokens by recursions received
};

class Service {
 public:
  virtual ~Service() = default;
  // Throws QueueFull when the queue is full, mor::Error for a request the engine cannot serve
  // (e.g. prompt longer than the context), naming the field.
  virtual std::unique_ptr<CompletionStream> submit(CompletionRequest request) = 0;
  virtual ServiceMetrics metrics() const = 0;
  virtual const io::Tokenizer& tokenizer() const = 0;
  virtual std::string model_name() const = 0;
  virtual int64_t max_context() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
};

}  // namespace mor::engine
