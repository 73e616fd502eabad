// The OpenAI-compatible HTTP front end of `mor serve`: strict /v1/completions request parsing, JSON
// and server-sent-event responses (legacy logprobs format), /v1/models, /health and Prometheus
// /metrics over any engine::Service. cpp-httplib and nlohmann/json; torch-free.
#include "mor/engine/http_server.h"

#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <string_view>
#include <thread>

#include "mor/core/error.h"
#include "mor/io/tokenizer.h"

namespace mor::engine {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxPrompts = 256;  // prompts in one batched request

// Fields /v1/completions accepts (some only with their neutral value; see parse_request).
const std::vector<std::string> kFields = {
    "prompt", "model",  "max_tokens",       "temperature",       "top_p",      "top_k",
    "seed",   "stop",   "stream",           "stream_options",    "echo",       "logprobs",
    "n",      "best_of", "presence_penalty", "frequency_penalty", "logit_bias", "suffix",
    "user",   "ignore_eos", "mor"};

// ---- errors ------------------------------------------------------------------------------------

// A request answered with an OpenAI-style JSON error.
struct HttpError {
  HttpError(int status_, std::string message_, std::string param_ = {},
            std::string type_ = "invalid_request_error", std::string code_ = {})
      : status(status_), message(std::move(message_)), param(std::move(param_)), type(std::move(type_)),
        code(std::move(code_)) {}
  int status;
  std::string message;
  std::string param;  // the request field at fault; "" for none
  std::string type;
  std::string code;
};

[[noreturn]] void reject(const std::string& param, const std::string& message) {
  throw HttpError{400, message, param};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const HttpError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  res.status = e.status;
  res.set_content(dump(json{{"error", err}}), "application/json");
}

// "field: reason" (how mor::Error messages name a field) -> "field"; "" without such a prefix.
std::string field_of(const std::string& message) {
  const size_t colon = message.find(": ");
  if (colon == 0 || colon == std::string::npos || colon > 64) return {};
  for (size_t i = 0; i < colon; ++i) {
    const auto c = static_cast<unsigned char>(message[i]);
    if (!std::islower(c) && !std::isdigit(c) && c != '_' && c != '.') return {};
  }
  return message.substr(0, colon);
}

// ---- UTF-8 -------------------------------------------------------------------------------------

// At s[i]: the length its lead byte announces (0: not a lead byte) and how many bytes from i fit.
struct Utf8Scan {
  size_t need = 0, have = 0;
};

Utf8Scan utf8_scan(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return {1, 1};
  size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return {0, 0};
  }
  size_t have = 1;
  while (have < need && i + have < s.size()) {
    const auto x = static_cast<unsigned char>(s[i + have]);
    if (x < (have == 1 ? lo : 0x80) || x > (have == 1 ? hi : 0xBF)) break;
    ++have;
  }
  return {need, have};
}

// Valid UTF-8: every byte that starts no complete valid sequence becomes U+FFFD.
std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Scan scan = utf8_scan(s, i);
    if (scan.need > 0 && scan.have == scan.need) {
      out.append(s.substr(i, scan.need));
      i += scan.need;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Utf8Scan scan = utf8_scan(s, i);
    if (scan.need == 0 || scan.have != scan.need) return false;
    i += scan.need;
  }
  return true;
}

// Length of s without a trailing, still incomplete UTF-8 sequence (held back while streaming, so
// that valid_utf8 over the pieces equals valid_utf8 over the whole).
size_t complete_prefix(std::string_view s) {
  for (size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    const size_t i = s.size() - k;
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;  // continuation byte
    const Utf8Scan scan = utf8_scan(s, i);
    return scan.need > 0 && scan.have == k && k < scan.need ? i : s.size();
  }
  return s.size();
}

// A token's text as a JSON string: itself when valid UTF-8, else "bytes:\xNN..." (as OpenAI does).
std::string token_label(const std::string& bytes) {
  if (is_valid_utf8(bytes)) return bytes;
  std::string out = "bytes:";
  static const char* hex = "0123456789abcdef";
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

// ---- request parsing ---------------------------------------------------------------------------

struct ParsedRequest {
  std::vector<std::vector<int32_t>> prompts;
  SamplingParams sampling;
  bool stream = false, include_usage = false, echo = false, logprobs = false, depths = false;
};

std::string kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::string: return "string";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "integer";
    case json::value_t::number_float: return "number";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    default: return "value";
  }
}

[[noreturn]] void wrong_type(const std::string& field, const std::string& expected, const json& v) {
  reject(field, field + ": must be " + expected + ", got " + kind(v));
}

double number_field(const json& v, const std::string& field) {
  if (!v.is_number()) wrong_type(field, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x)) reject(field, field + ": must be finite");
  return x;
}

int64_t integer_field(const json& v, const std::string& field) {
  if (!v.is_number_integer()) wrong_type(field, "an integer", v);
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    reject(field, field + ": " + std::to_string(v.get<uint64_t>()) + " is out of range");
  return v.get<int64_t>();
}

bool bool_field(const json& v, const std::string& field) {
  if (!v.is_boolean()) wrong_type(field, "a boolean", v);
  return v.get<bool>();
}

// A list of token ids, each in [0, vocab).
std::vector<int32_t> token_ids(const json& list, const std::string& name, int64_t vocab) {
  std::vector<int32_t> ids;
  ids.reserve(list.size());
  for (const json& t : list) {
    if (!t.is_number_integer())
      reject("prompt", name + ": token ids must be integers, got " + kind(t));
    const bool too_big = t.is_number_unsigned() ? t.get<uint64_t>() >= uint64_t(vocab)
                                                : t.get<int64_t>() >= vocab;
    if (too_big || (!t.is_number_unsigned() && t.get<int64_t>() < 0))
      reject("prompt", name + ": token id " + t.dump() + " is out of range [0, " +
                           std::to_string(vocab) + ")");
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  if (ids.empty()) reject("prompt", name + ": must not be empty");
  return ids;
}

std::vector<int32_t> one_prompt(const json& p, const std::string& name, const Service& service) {
  if (p.is_string()) {
    const std::string& text = p.get_ref<const std::string&>();
    if (text.empty()) reject("prompt", name + ": must not be empty");
    std::vector<int32_t> ids = service.tokenizer().encode(text);
    if (ids.empty()) reject("prompt", name + ": encodes to no tokens");
    return ids;
  }
  if (p.is_array()) return token_ids(p, name, service.tokenizer().vocab_size());
  wrong_type("prompt", "a string or a list of token ids", p);
}

ParsedRequest parse_request(const std::string& body, const Service& service) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    reject("", std::string("malformed JSON: ") + e.what());
  }
  if (!j.is_object()) reject("", "the request body must be a JSON object, got " + kind(j));
  for (const auto& item : j.items()) {
    if (std::find(kFields.begin(), kFields.end(), item.key()) != kFields.end()) continue;
    std::string supported;
    for (const auto& f : kFields) supported += (supported.empty() ? "" : ", ") + f;
    reject(item.key(), "unknown field '" + item.key() + "'; supported: " + supported);
  }
  // A present, non-null field (null means the default, as OpenAI's API treats it).
  const auto get = [&](const char* name) -> const json* {
    const auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  ParsedRequest r;
  SamplingParams& s = r.sampling;
  for (const char* name : {"model", "user"})
    if (const json* v = get(name); v && !v->is_string()) wrong_type(name, "a string", *v);
  if (const json* v = get("max_tokens")) s.max_tokens = integer_field(*v, "max_tokens");
  if (const json* v = get("temperature")) s.temperature = number_field(*v, "temperature");
  if (const json* v = get("top_p")) s.top_p = number_field(*v, "top_p");
  if (const json* v = get("top_k")) {
    s.top_k = integer_field(*v, "top_k");
    if (s.top_k == -1) s.top_k = 0;  // vLLM's "off"
  }
  if (const json* v = get("seed")) {
    if (!v->is_number_integer()) wrong_type("seed", "an integer", *v);
    if (!v->is_number_unsigned() && v->get<int64_t>() < 0)
      reject("seed", "seed: must be a non-negative integer, got " + v->dump());
    s.seed = v->get<uint64_t>();
  }
  if (const json* v = get("stop")) {
    if (v->is_string()) {
      s.stop = {v->get<std::string>()};
    } else if (v->is_array()) {
      for (const json& x : *v) {
        if (!x.is_string()) wrong_type("stop", "a string or a list of strings", *v);
        s.stop.push_back(x.get<std::string>());
      }
    } else {
      wrong_type("stop", "a string or a list of strings", *v);
    }
  }
  if (const json* v = get("stream")) r.stream = bool_field(*v, "stream");
  if (const json* v = get("stream_options")) {
    if (!v->is_object()) wrong_type("stream_options", "an object", *v);
    for (const auto& item : v->items()) {
      if (item.key() != "include_usage")
        reject("stream_options." + item.key(), "stream_options: unknown field '" + item.key() +
                                                   "'; supported: include_usage");
      if (!item.value().is_null())
        r.include_usage = bool_field(item.value(), "stream_options.include_usage");
    }
  }
  if (const json* v = get("echo")) r.echo = bool_field(*v, "echo");
  if (const json* v = get("logprobs")) {
    s.logprobs = integer_field(*v, "logprobs");
    r.logprobs = true;
  }
  if (const json* v = get("ignore_eos")) s.ignore_eos = bool_field(*v, "ignore_eos");
  for (const char* name : {"n", "best_of"}) {
    if (const json* v = get(name); v && integer_field(*v, name) != 1)
      reject(name, std::string(name) + ": only 1 is supported, got " + v->dump());
  }
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (const json* v = get(name); v && number_field(*v, name) != 0.0)
      reject(name, std::string(name) + ": only 0 is supported, got " + v->dump());
  }
  if (const json* v = get("logit_bias")) {
    if (!v->is_object()) wrong_type("logit_bias", "an object", *v);
    if (!v->empty()) reject("logit_bias", "logit_bias: not supported (only {} or null)");
  }
  if (get("suffix")) reject("suffix", "suffix: not supported (only null)");
  if (const json* v = get("mor")) {
    if (!v->is_object()) wrong_type("mor", "an object", *v);
    for (const auto& item : v->items()) {
      if (item.key() != "depths")
        reject("mor." + item.key(), "mor: unknown field '" + item.key() + "'; supported: depths");
      if (!item.value().is_null()) r.depths = bool_field(item.value(), "mor.depths");
    }
  }
  try {
    validate(s);
  } catch (const mor::Error& e) {
    reject(field_of(e.what()), e.what());
  }

  const json* prompt = get("prompt");
  if (!prompt) reject("prompt", "prompt: required");
  const bool batch = prompt->is_array() && !prompt->empty() &&
                     (prompt->front().is_string() || prompt->front().is_array());
  if (!batch) {
    r.prompts.push_back(one_prompt(*prompt, "prompt", service));
  } else {
    if (prompt->size() > kMaxPrompts)
      reject("prompt", "prompt: at most " + std::to_string(kMaxPrompts) + " prompts per request, got " +
                           std::to_string(prompt->size()));
    for (size_t i = 0; i < prompt->size(); ++i) {
      const json& p = (*prompt)[i];
      const std::string name = "prompt[" + std::to_string(i) + "]";
      if (p.type() != prompt->front().type())
        reject("prompt", name + ": a batch must be all strings or all token lists, got " + kind(p));
      r.prompts.push_back(one_prompt(p, name, service));
    }
  }
  const int64_t context = service.max_context();
  for (const auto& p : r.prompts) {
    const auto n = static_cast<int64_t>(p.size());
    if (n + s.max_tokens > context)
      reject(n > context || s.max_tokens == 0 ? "prompt" : "max_tokens",
             "prompt: the model's context is " + std::to_string(context) + " tokens; this request needs " +
                 std::to_string(n) + " (prompt) + " + std::to_string(s.max_tokens) + " (max_tokens)");
  }
  return r;
}

// ---- responses ---------------------------------------------------------------------------------

// The requests of one HTTP call; cancels the unfinished ones when dropped (client gone, error).
struct Submitted {
  std::vector<std::unique_ptr<CompletionStream>> streams;
  std::vector<char> done;

  void cancel_unfinished() noexcept {
    for (size_t i = 0; i < streams.size(); ++i) {
      if (done[i]) continue;
      done[i] = 1;
      try {
        streams[i]->cancel();
      } catch (...) {
      }
    }
  }
  ~Submitted() { cancel_unfinished(); }
};

// Part of one choice: text bytes and, when asked, legacy logprobs and depths of its tokens.
struct Delta {
  std::string text;
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array(), depths = json::array();
};

double finite_logprob(float x) {
  return std::isfinite(x) ? double(x) : double(std::numeric_limits<float>::lowest());
}

// Tracks one choice's byte offset and turns tokens into Delta entries.
class ChoiceTracker {
 public:
  ChoiceTracker(const io::Tokenizer& tokenizer, bool logprobs, bool depths)
      : tokenizer_(tokenizer), logprobs_(logprobs), depths_(depths) {}

  void add(Delta& d, const TokenInfo& t, const std::string& text) {
    if (logprobs_) {
      d.tokens.push_back(token_label(decode(t.id)));
      d.text_offset.push_back(offset_);
      if (!t.logprob) {
        d.token_logprobs.push_back(nullptr);
        d.top_logprobs.push_back(nullptr);
      } else {
        d.token_logprobs.push_back(finite_logprob(*t.logprob));
        json top = json::object();
        for (const auto& [id, lp] : t.top) {
          const std::string key = token_label(decode(id));
          if (!top.contains(key)) top[key] = finite_logprob(lp);
        }
        d.top_logprobs.push_back(std::move(top));
      }
    }
    if (depths_) d.depths.push_back(t.depth);
    d.text += text;
    offset_ += static_cast<int64_t>(text.size());
  }

  json logprobs_json(const Delta& d) const {
    if (!logprobs_) return nullptr;
    return {{"tokens", d.tokens}, {"token_logprobs", d.token_logprobs},
            {"top_logprobs", d.top_logprobs}, {"text_offset", d.text_offset}};
  }

  bool has_info(const Delta& d) const { return (logprobs_ && !d.tokens.empty()) || (depths_ && !d.depths.empty()); }

  std::string decode(int32_t id) const { return tokenizer_.decode(std::span<const int32_t>(&id, 1)); }

 private:
  const io::Tokenizer& tokenizer_;
  bool logprobs_, depths_;
  int64_t offset_ = 0;
};

// The prompt tokens to echo: the stream's (with logprobs) or, if it gives none, the bare ids.
std::vector<TokenInfo> echo_tokens(CompletionStream& stream, const std::vector<int32_t>& prompt) {
  std::vector<TokenInfo> tokens = stream.prompt_tokens();
  if (tokens.size() == prompt.size()) return tokens;
  tokens.assign(prompt.size(), TokenInfo{});
  for (size_t i = 0; i < prompt.size(); ++i) tokens[i].id = prompt[i];
  return tokens;
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_double(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

// One streamed completion: the state the chunked content provider advances, one event per call.
struct StreamJob {
  std::shared_ptr<Submitted> submitted;
  ParsedRequest request;
  const io::Tokenizer* tokenizer = nullptr;
  std::string id, model;
  int64_t created = 0;
  size_t choice = 0;
  bool started = false, finished = false;
  std::unique_ptr<ChoiceTracker> tracker;
  std::string pending;  // bytes of an incomplete UTF-8 character, held for the next chunk
  int64_t prompt_tokens = 0, completion_tokens = 0;

  static bool write_event(httplib::DataSink& sink, const std::string& data) {
    const std::string event = "data: " + data + "\n\n";
    return sink.write(event.data(), event.size());
  }

  bool send_chunk(httplib::DataSink& sink, const Delta& d, const char* finish_reason) {
    pending += d.text;
    const size_t cut = finish_reason ? pending.size() : complete_prefix(pending);
    const std::string text = valid_utf8(std::string_view(pending).substr(0, cut));
    pending.erase(0, cut);
    if (text.empty() && !finish_reason && !tracker->has_info(d)) return true;
    json c = {{"text", text},
              {"index", choice},
              {"logprobs", tracker->logprobs_json(d)},
              {"finish_reason", finish_reason ? json(finish_reason) : json(nullptr)}};
    if (request.depths) c["mor"] = {{"depths", d.depths}};
    const json chunk = {{"id", id}, {"object", "text_completion"}, {"created", created},
                        {"model", model}, {"choices", json::array({c})}};
    return write_event(sink, dump(chunk));
  }

  bool finish_all(httplib::DataSink& sink) {
    bool ok = true;
    if (request.include_usage) {
      const json chunk = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
                          {"choices", json::array()}, {"usage", usage_json(prompt_tokens, completion_tokens)}};
      ok = write_event(sink, dump(chunk));
    }
    ok = ok && write_event(sink, "[DONE]");
    finished = true;
    if (ok) sink.done();
    return ok;
  }

  // The content provider: false ends the response (the client went away).
  bool step(httplib::DataSink& sink) {
    if (finished) return false;
    try {
      CompletionStream& stream = *submitted->streams[choice];
      if (!started) {
        started = true;
        pending.clear();
        tracker = std::make_unique<ChoiceTracker>(*tokenizer, request.logprobs, request.depths);
        if (!request.echo) return true;
        Delta d;
        for (const TokenInfo& t : echo_tokens(stream, request.prompts[choice]))
          tracker->add(d, t, tracker->decode(t.id));
        return send_chunk(sink, d, nullptr);
      }
      TokenInfo token;
      if (stream.next(token)) {
        ++completion_tokens;
        Delta d;
        tracker->add(d, token, token.text);
        return send_chunk(sink, d, nullptr);
      }
      submitted->done[choice] = 1;
      const std::string reason = stream.finish_reason(), error = stream.error();
      bool ok = send_chunk(sink, Delta{}, reason.c_str());
      if (ok && reason == "abort" && !error.empty())
        ok = write_event(sink, dump(json{{"error", {{"message", "generation failed: " + error},
                                                    {"type", "server_error"}, {"param", nullptr},
                                                    {"code", nullptr}}}}));
      if (++choice < submitted->streams.size()) {
        started = false;
        return ok;
      }
      return finish_all(sink) && ok;
    } catch (const std::exception& e) {
      submitted->cancel_unfinished();
      finished = true;
      const bool ok = write_event(sink, dump(json{{"error", {{"message", std::string("internal error: ") + e.what()},
                                                             {"type", "server_error"}, {"param", nullptr},
                                                             {"code", nullptr}}}})) &&
                      write_event(sink, "[DONE]");
      if (ok) sink.done();
      return ok;
    }
  }
};

}  // namespace

// ---- the server --------------------------------------------------------------------------------

struct HttpServer::Impl {
  Service& service;
  HttpServerOptions options;
  httplib::Server server;
  std::atomic<bool> stopping{false};
  std::mutex run_mutex;
  bool running = false, ran = false;
  int port = -1;
  int listen_fd = -1;  // the listening socket, as httplib's socket-options hook saw it
  std::atomic<uint64_t> next_id{0};
  uint64_t id_salt = 0;
  mutable std::mutex codes_mutex;
  std::map<int, int64_t> response_codes;

  Impl(Service& s, HttpServerOptions o) : service(s), options(std::move(o)) {
    std::random_device rd;
    id_salt = (uint64_t(rd()) << 32) ^ rd();
  }

  std::string new_id() {
    uint64_t x = (next_id.fetch_add(1) + 1) * 0x9E3779B97F4A7C15ull ^ id_salt;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(x));
    return std::string("cmpl-") + buf;
  }

  void completions(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    std::string body;
    bool too_large = false, ok = false;
    const auto receive = [&](const char* data, size_t n) {
      if (body.size() + n > size_t(options.max_body_bytes)) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    };
    if (req.is_multipart_form_data()) {
      reader([](const httplib::MultipartFormData&) { return true; }, [](const char*, size_t) { return true; });
      return send_error(res, {400, "the request body must be JSON (Content-Type: application/json)"});
    }
    ok = reader(receive);
    if (too_large || res.status == 413)
      return send_error(res, {413, "request body too large (limit " + std::to_string(options.max_body_bytes) +
                                       " bytes)"});
    if (!ok) return send_error(res, {400, "could not read the request body"});
    if (stopping) return send_error(res, {503, "the server is shutting down", "", "server_error"});
    try {
      ParsedRequest r = parse_request(body, service);
      auto submitted = std::make_shared<Submitted>();
      for (const auto& p : r.prompts) {
        submitted->streams.push_back(service.submit(CompletionRequest{p, r.sampling, r.echo}));
        submitted->done.push_back(0);
      }
      int64_t prompt_tokens = 0;
      for (const auto& p : r.prompts) prompt_tokens += static_cast<int64_t>(p.size());
      if (r.stream) return start_stream(res, std::move(submitted), std::move(r), prompt_tokens);
      json choices = json::array();
      int64_t completion_tokens = 0;
      for (size_t i = 0; i < r.prompts.size(); ++i) {
        CompletionStream& stream = *submitted->streams[i];
        ChoiceTracker tracker(service.tokenizer(), r.logprobs, r.depths);
        Delta d;
        if (r.echo)
          for (const TokenInfo& t : echo_tokens(stream, r.prompts[i])) tracker.add(d, t, tracker.decode(t.id));
        TokenInfo token;
        while (stream.next(token)) {
          tracker.add(d, token, token.text);
          ++completion_tokens;
        }
        submitted->done[i] = 1;
        const std::string reason = stream.finish_reason();
        if (reason == "abort" && !stream.error().empty())
          throw HttpError{500, "generation failed: " + stream.error(), "", "server_error"};
        json c = {{"text", valid_utf8(d.text)}, {"index", i}, {"logprobs", tracker.logprobs_json(d)},
                  {"finish_reason", reason}};
        if (r.depths) c["mor"] = {{"depths", d.depths}};
        choices.push_back(std::move(c));
      }
      const json out = {{"id", new_id()}, {"object", "text_completion"}, {"created", unix_time()},
                        {"model", service.model_name()}, {"choices", std::move(choices)},
                        {"usage", usage_json(prompt_tokens, completion_tokens)}};
      res.set_content(dump(out), "application/json");
    } catch (const HttpError& e) {
      send_error(res, e);
    } catch (const QueueFull& e) {
      send_error(res, {429, std::string("the server is busy, retry later (") + e.what() + ")", "",
                       "rate_limit_error", "queue_full"});
    } catch (const mor::Error& e) {
      send_error(res, {400, e.what(), field_of(e.what())});
    } catch (const std::exception& e) {
      send_error(res, {500, std::string("internal error: ") + e.what(), "", "server_error"});
    }
  }

  void start_stream(httplib::Response& res, std::shared_ptr<Submitted> submitted, ParsedRequest r,
                    int64_t prompt_tokens) {
    auto job = std::make_shared<StreamJob>();
    job->submitted = std::move(submitted);
    job->request = std::move(r);
    job->tokenizer = &service.tokenizer();
    job->id = new_id();
    job->model = service.model_name();
    job->created = unix_time();
    job->prompt_tokens = prompt_tokens;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream", [job](size_t, httplib::DataSink& sink) { return job->step(sink); },
        [job](bool) { job->submitted->cancel_unfinished(); });  // no-op once all finished
  }

  std::string metrics_text() const {
    const ServiceMetrics m = service.metrics();
    std::string out;
    const auto family = [&](const char* name, const char* type, const char* help) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    const auto metric = [&](const char* name, const char* type, const char* help, const std::string& value) {
      family(name, type, help);
      out += std::string(name) + " " + value + "\n";
    };
    using std::to_string;
    metric("mor_queue_waiting", "gauge", "Requests waiting for a slot.", to_string(m.waiting));
    metric("mor_running", "gauge", "Requests being generated.", to_string(m.running));
    metric("mor_kv_blocks_used", "gauge", "KV-cache blocks in use.", to_string(m.kv_blocks_used));
    metric("mor_kv_blocks_total", "gauge", "KV-cache blocks in all.", to_string(m.kv_blocks_total));
    metric("mor_kv_bytes_used", "gauge", "KV-cache bytes in use.", to_string(m.kv_bytes_used));
    metric("mor_kv_bytes_total", "gauge", "KV-cache bytes in all.", to_string(m.kv_bytes_total));
    metric("mor_requests_total", "counter", "Requests submitted to the engine.", to_string(m.requests_total));
    metric("mor_requests_rejected_total", "counter", "Requests rejected (queue full).",
           to_string(m.requests_rejected));
    metric("mor_prompt_tokens_total", "counter", "Prompt tokens processed.", to_string(m.prompt_tokens_total));
    metric("mor_generated_tokens_total", "counter", "Tokens generated.", to_string(m.generated_tokens_total));
    metric("mor_generated_tokens_per_second", "gauge", "Recent generation rate.",
           format_double(m.generated_tokens_per_s));
    family("mor_depth_tokens", "counter", "Generated tokens by the recursions they received.");
    for (size_t d = 0; d < m.depth_histogram.size(); ++d)
      out += "mor_depth_tokens{depth=\"" + to_string(d) + "\"} " + to_string(m.depth_histogram[d]) + "\n";
    family("mor_http_responses_total", "counter", "HTTP responses by status code.");
    std::lock_guard lock(codes_mutex);
    for (const auto& [code, count] : response_codes)
      out += "mor_http_responses_total{code=\"" + to_string(code) + "\"} " + to_string(count) + "\n";
    return out;
  }

  void install_routes() {
    static const std::map<std::string, std::string> kAllowed = {
        {"/v1/completions", "POST"}, {"/v1/models", "GET, HEAD"}, {"/health", "GET, HEAD"}, {"/metrics", "GET, HEAD"}};
    server.Post("/v1/completions",
                [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
                  completions(req, res, reader);
                });
    server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (stopping) {
        res.status = 503;
        res.set_content(R"({"status":"stopping"})", "application/json");
      } else {
        res.set_content(R"({"status":"ok"})", "application/json");
      }
    });
    server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      const json model = {{"id", service.model_name()}, {"object", "model"}, {"created", unix_time()},
                          {"owned_by", "mor"}, {"max_model_len", service.max_context()}};
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({model})}}), "application/json");
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
    });
    // Anything else: 405 on a known path, 404 otherwise.
    const auto fallback = [](const httplib::Request& req, httplib::Response& res) {
      const auto it = kAllowed.find(req.path);
      if (it == kAllowed.end())
        return send_error(res, {404, "not found: " + req.path +
                                         " (endpoints: POST /v1/completions, GET /v1/models, GET /health, "
                                         "GET /metrics)"});
      res.set_header("Allow", it->second);
      send_error(res, {405, "method " + req.method + " is not allowed on " + req.path + " (allowed: " +
                                it->second + ")"});
    };
    server.Get(".*", fallback);
    server.Post(".*", fallback);
    server.Put(".*", fallback);
    server.Delete(".*", fallback);
    server.Patch(".*", fallback);
    server.Options(".*", fallback);
    // httplib's own errors (413 outside /v1/completions, 400 for a malformed request line, ...).
    server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                                      httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      const std::string what = res.status == 413   ? "request body too large"
                               : res.status == 404 ? "not found: " + req.path
                               : res.status == 414 ? "request URI too long"
                               : res.status == 400 ? "malformed HTTP request"
                                                   : "HTTP error " + std::to_string(res.status);
      send_error(res, {res.status, what, "", res.status >= 500 ? "server_error" : "invalid_request_error"});
      return httplib::Server::HandlerResponse::Handled;
    }));
    server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, {500, "internal error: " + what, "", "server_error"});
    });
    server.set_logger([this](const httplib::Request&, const httplib::Response& res) {
      std::lock_guard lock(codes_mutex);
      ++response_codes[res.status];
    });
  }
};

HttpServer::HttpServer(Service& service, HttpServerOptions options) {
  MOR_CHECK(options.threads >= 1, "serve: threads must be >= 1, got ", options.threads);
  MOR_CHECK(options.max_body_bytes >= 1, "serve: max_body_bytes must be >= 1, got ", options.max_body_bytes);
  MOR_CHECK(options.read_timeout_s > 0 && options.write_timeout_s > 0, "serve: timeouts must be > 0");
  // Writing to a socket the client closed raises SIGPIPE (httplib sends without MSG_NOSIGNAL).
  ::signal(SIGPIPE, SIG_IGN);
  impl_ = std::make_unique<Impl>(service, std::move(options));
  Impl& s = *impl_;
  const auto seconds = [](double t) { return std::chrono::microseconds(static_cast<int64_t>(t * 1e6)); };
  s.server.set_read_timeout(seconds(s.options.read_timeout_s));
  s.server.set_write_timeout(seconds(s.options.write_timeout_s));
  s.server.set_payload_max_length(static_cast<size_t>(s.options.max_body_bytes));
  const auto threads = static_cast<size_t>(s.options.threads);
  s.server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Not httplib's default SO_REUSEPORT (a second server on the same port would share its
  // connections instead of failing to bind); remember the socket to raise its backlog.
  s.server.set_socket_options([&s](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    s.listen_fd = sock;
  });
  s.install_routes();
}

HttpServer::~HttpServer() {
  stop();
  Impl& s = *impl_;
  for (;;) {  // run() on another thread must be out of httplib before the server goes
    {
      std::lock_guard lock(s.run_mutex);
      if (!s.running) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!s.ran && s.listen_fd >= 0) ::close(s.listen_fd);  // bound but never served
}

int HttpServer::bind() {
  Impl& s = *impl_;
  errno = 0;
  const int port = s.options.port == 0 ? s.server.bind_to_any_port(s.options.host)
                                       : (s.server.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1);
  if (port < 0)
    fail("cannot listen on ", s.options.host, ":", s.options.port, ": ",
         errno ? std::strerror(errno) : "cannot resolve or bind the address");
  // httplib listens with a backlog of 5: a burst of clients would see resets. Listening again on
  // the bound socket only changes the backlog.
  if (s.listen_fd >= 0) ::listen(s.listen_fd, SOMAXCONN);
  s.port = port;
  return port;
}

int HttpServer::bound_port() const { return impl_->port; }

void HttpServer::run() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.run_mutex);
    MOR_CHECK(s.port >= 0, "HttpServer::run: bind() first");
    if (s.stopping) return;
    s.running = s.ran = true;
  }
  s.server.listen_after_bind();
  std::lock_guard lock(s.run_mutex);
  s.running = false;
}

void HttpServer::stop() {
  Impl& s = *impl_;
  s.stopping = true;
  // run() may be between its check and httplib's loop start: wait until it runs (or returned).
  for (;;) {
    {
      std::lock_guard lock(s.run_mutex);
      if (!s.running) return;
      if (s.server.is_running()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  s.server.stop();
}

}  // namespace mor::engine
