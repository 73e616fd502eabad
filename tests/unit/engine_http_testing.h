// Test support for the HTTP front end: a deterministic FakeService (tokens derived from the prompt,
// per-token delay, bounded queue, fixed fake log-probabilities), a loopback TestServer on port 0,
// and helpers to post JSON and parse server-sent events.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mor/core/error.h"
#include "mor/engine/http_server.h"
#include "mor/engine/service.h"
#include "mor/io/tokenizer.h"

namespace mor::engine::testing {

using json = nlohmann::json;

inline const io::Tokenizer& fixture_tokenizer() {
  static const io::Tokenizer tokenizer =
      io::Tokenizer::from_file(MOR_SOURCE_DIR "/tests/fixtures/tokenizer/mor-trained/bytelevel.json");
  return tokenizer;
}

struct FakeConfig {
  std::chrono::microseconds delay{0};  // per generated token
  int64_t capacity = 1 << 20;          // live streams before submit() throws QueueFull
  int64_t max_context = 256;
  std::optional<int64_t> eos_after{};  // finish "stop" after this many tokens
  std::string throw_on_submit{};       // "mor": mor::Error naming a field, "other": std::runtime_error
  std::string engine_error{};          // finish "abort" with this error after the tokens
  bool split_utf8 = false;             // generate single-byte tokens spelling "hé€!" (split characters)
  bool gated = false;                  // next() waits for open_gate() (or cancel, or 20 s)
};

class FakeService;

// The fake log-probability of the token at absolute position `pos`; alternatives follow it.
inline float fake_logprob(size_t pos) { return -(0.25f + 0.125f * static_cast<float>(pos % 4)); }

class FakeStream : public CompletionStream {
 public:
  FakeStream(FakeService& service, CompletionRequest request, std::vector<int32_t> tokens);
  ~FakeStream() override;
  std::vector<TokenInfo> prompt_tokens() override;
  bool next(TokenInfo& token) override;
  std::string finish_reason() const override { return finish_; }
  std::string error() const override { return error_; }
  void cancel() override;

 private:
  TokenInfo info(int32_t id, size_t pos) const;
  FakeService& service_;
  CompletionRequest request_;
  std::vector<int32_t> tokens_;  // what it will generate
  size_t produced_ = 0;
  std::atomic<bool> cancelled_{false};
  std::string finish_, error_;
};

class FakeService : public Service {
 public:
  explicit FakeService(FakeConfig config = {}) : config_(std::move(config)) {}

  // The tokens a prompt generates (at most n; fewer with eos_after).
  std::vector<int32_t> tokens_for(const std::vector<int32_t>& prompt, int64_t n) const {
    const io::Tokenizer& tok = fixture_tokenizer();
    std::vector<int32_t> pool;
    size_t start = 0;
    if (config_.split_utf8) {
      for (const unsigned char byte : std::string("h\xC3\xA9\xE2\x82\xAC!")) pool.push_back(byte_id(byte));
    } else {
      pool = tok.encode(" the quick brown fox jumps over the lazy dog, again and again");
      for (const int32_t id : prompt) start += static_cast<size_t>(id);
    }
    if (config_.eos_after) n = std::min(n, *config_.eos_after);
    std::vector<int32_t> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(pool[(start + static_cast<size_t>(i)) % pool.size()]);
    return out;
  }
  std::string text_for(const std::vector<int32_t>& prompt, int64_t n) const {
    return fixture_tokenizer().decode(tokens_for(prompt, n));
  }
  static int32_t byte_id(unsigned char byte) {
    const io::Tokenizer& tok = fixture_tokenizer();
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      const int32_t ids[1] = {id};
      if (tok.decode(ids) == std::string(1, static_cast<char>(byte))) return id;
    }
    throw std::runtime_error("no single-byte token");
  }

  std::unique_ptr<CompletionStream> submit(CompletionRequest request) override {
    if (config_.throw_on_submit == "mor") fail("prompt: the fake engine refuses this prompt");
    if (config_.throw_on_submit == "other") throw std::runtime_error("fake engine exploded");
    if (live_.fetch_add(1) >= config_.capacity) {
      live_.fetch_sub(1);
      rejected_.fetch_add(1);
      throw QueueFull("fake queue is full");
    }
    submitted_.fetch_add(1);
    {
      std::lock_guard lock(mutex_);
      last_request_ = request;
    }
    std::vector<int32_t> tokens = tokens_for(request.prompt, request.sampling.max_tokens);
    return std::make_unique<FakeStream>(*this, std::move(request), std::move(tokens));
  }

  ServiceMetrics metrics() const override {
    ServiceMetrics m;
    m.waiting = 3;
    m.running = live_.load();
    m.kv_blocks_used = 5;
    m.kv_blocks_total = 100;
    m.kv_bytes_used = 1234;
    m.kv_bytes_total = 5678;
    m.requests_total = submitted_.load();
    m.requests_rejected = rejected_.load();
    m.prompt_tokens_total = 40;
    m.generated_tokens_total = 41;
    m.generated_tokens_per_s = 12.5;
    m.depth_histogram = {0, 7, 9};
    return m;
  }
  const io::Tokenizer& tokenizer() const override { return fixture_tokenizer(); }
  std::string model_name() const override { return "fake-mor"; }
  int64_t max_context() const override { return config_.max_context; }
  std::optional<int32_t> eos_id() const override { return 0; }

  CompletionRequest last_request() const {
    std::lock_guard lock(mutex_);
    return last_request_;
  }
  void open_gate() {
    std::lock_guard lock(mutex_);
    gate_open_ = true;
    gate_cv_.notify_all();
  }
  // Waits for the gate; false when cancelled first.
  bool wait_gate(const std::atomic<bool>& cancelled) {
    std::unique_lock lock(mutex_);
    gate_cv_.wait_for(lock, std::chrono::seconds(20), [&] { return gate_open_ || cancelled.load(); });
    return !cancelled.load();
  }
  void notify_cancel() {
    cancels_.fetch_add(1);
    std::lock_guard lock(mutex_);
    gate_cv_.notify_all();
  }

  const FakeConfig& config() const { return config_; }
  int64_t cancels() const { return cancels_.load(); }
  int64_t live() const { return live_.load(); }
  std::atomic<int64_t> live_{0}, submitted_{0}, rejected_{0}, cancels_{0};

 private:
  FakeConfig config_;
  mutable std::mutex mutex_;
  std::condition_variable gate_cv_;
  bool gate_open_ = false;
  CompletionRequest last_request_;
};

inline FakeStream::FakeStream(FakeService& service, CompletionRequest request, std::vector<int32_t> tokens)
    : service_(service), request_(std::move(request)), tokens_(std::move(tokens)) {}

inline FakeStream::~FakeStream() { service_.live_.fetch_sub(1); }

inline TokenInfo FakeStream::info(int32_t id, size_t pos) const {
  TokenInfo t;
  t.id = id;
  const int32_t ids[1] = {id};
  t.text = fixture_tokenizer().decode(ids);
  t.depth = 1 + id % 3;
  if (pos == 0) return t;
  t.logprob = fake_logprob(pos);
  const auto vocab = static_cast<int32_t>(fixture_tokenizer().vocab_size());
  for (int64_t k = 0; k < request_.sampling.logprobs; ++k)
    t.top.emplace_back((id + static_cast<int32_t>(k)) % vocab, *t.logprob - static_cast<float>(k));
  return t;
}

inline std::vector<TokenInfo> FakeStream::prompt_tokens() {
  std::vector<TokenInfo> out;
  if (!request_.echo) return out;
  for (size_t i = 0; i < request_.prompt.size(); ++i) out.push_back(info(request_.prompt[i], i));
  return out;
}

inline bool FakeStream::next(TokenInfo& token) {
  if (!finish_.empty()) return false;
  if (service_.config().gated && !service_.wait_gate(cancelled_)) {
    finish_ = "abort";
    return false;
  }
  if (service_.config().delay.count() > 0) std::this_thread::sleep_for(service_.config().delay);
  if (cancelled_) {
    finish_ = "abort";
    return false;
  }
  if (produced_ == tokens_.size()) {
    if (!service_.config().engine_error.empty()) {
      finish_ = "abort";
      error_ = service_.config().engine_error;
    } else {
      finish_ = produced_ < static_cast<size_t>(request_.sampling.max_tokens) ? "stop" : "length";
    }
    return false;
  }
  token = info(tokens_[produced_], request_.prompt.size() + produced_);
  ++produced_;
  return true;
}

inline void FakeStream::cancel() {
  if (!cancelled_.exchange(true)) service_.notify_cancel();
}

// An HttpServer on a free loopback port, served from a background thread.
class TestServer {
 public:
  explicit TestServer(FakeService& service, HttpServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<HttpServer>(service, options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~TestServer() { stop(); }
  void stop() {
    server_->stop();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_connection_timeout(20);
    c->set_read_timeout(30);
    c->set_write_timeout(30);
    return c;
  }

 private:
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::thread thread_;
};

struct Reply {
  int status = 0;
  std::string body;
  json j;  // parsed body (null unless JSON)
  std::string content_type;
  httplib::Headers headers;
};

inline Reply to_reply(const httplib::Result& r) {
  Reply out;
  if (!r) {
    ADD_FAILURE() << "no HTTP response: " << httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  out.content_type = r->get_header_value("Content-Type");
  if (out.content_type.rfind("application/json", 0) == 0) out.j = json::parse(out.body, nullptr, false);
  return out;
}

inline Reply post(const TestServer& server, const std::string& body, const std::string& path = "/v1/completions") {
  return to_reply(server.client()->Post(path, body, "application/json"));
}
inline Reply post(const TestServer& server, const json& body) { return post(server, body.dump()); }
inline Reply get(const TestServer& server, const std::string& path) { return to_reply(server.client()->Get(path)); }

// The data payloads of a text/event-stream body; `done` tells whether it ended with [DONE].
struct Events {
  std::vector<json> chunks;
  bool done = false;
  bool well_formed = true;
};

inline Events parse_sse(const std::string& body) {
  Events out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos || body.compare(pos, 6, "data: ") != 0 || out.done) {
      out.well_formed = false;
      break;
    }
    const std::string data = body.substr(pos + 6, end - pos - 6);
    pos = end + 2;
    if (data == "[DONE]") {
      out.done = true;
      continue;
    }
    json j = json::parse(data, nullptr, false);
    if (j.is_discarded()) out.well_formed = false;
    out.chunks.push_back(std::move(j));
  }
  return out;
}

// Concatenated choice texts of streamed chunks, per index.
inline std::map<int64_t, std::string> stream_texts(const Events& events) {
  std::map<int64_t, std::string> out;
  for (const json& c : events.chunks)
    if (c.contains("choices"))
      for (const json& choice : c["choices"]) out[choice["index"].get<int64_t>()] += choice["text"].get<std::string>();
  return out;
}

}  // namespace mor::engine::testing
