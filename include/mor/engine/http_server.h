// The OpenAI-compatible HTTP front end of `mor serve` (cpp-httplib), over any engine::Service.
//
// Endpoints:
//   POST /v1/completions  OpenAI completions: prompt (string, or list of token ids), max_tokens,
//                         temperature, top_p, top_k, seed, stop (string or list), stream (SSE:
//                         "data: {...}\n\n" chunks, then "data: [DONE]"), echo, logprobs (0..20;
//                         lm-evaluation-harness's local-completions scores with echo, logprobs 1
//                         and max_tokens 1, dropping the generated token; max_tokens 0 works too),
//                         n (1 only), model (ignored if it names another model: reported back). Extension: "mor": {"depths": true} adds per-token depths.
//   GET  /v1/models       the served model
//   GET  /health          {"status": "ok"} while the engine runs
//   GET  /metrics         Prometheus text: queue, running, KV blocks/bytes, tokens/s, depth histogram
// Errors are JSON {"error": {"message", "type", "param", "code"}}: 400 for malformed JSON, unknown
// or mistyped fields and out-of-range values (param names the field), 404 unknown path, 405 wrong
// method, 413 body too large, 429 when the engine's queue is full, 503 while shutting down.
// Never a hang: a full queue answers at once.
//
// Details of /v1/completions:
// - prompt may also be a batch: a list of strings or a list of token-id lists (at most 256; what
//   lm-evaluation-harness's local-completions sends). Each is submitted as its own request; choice
//   i answers prompt i (streamed one after the other). Token ids must be in [0, vocab).
// - Types are strict (no "5" for 5, no 1.0 for an integer); null means the default. Accepted and
//   ignored: model, user. Accepted only with their neutral value: n 1, best_of 1,
//   presence_penalty 0, frequency_penalty 0, logit_bias {}, suffix null. Extensions: top_k (-1 is
//   off, as in vLLM), ignore_eos, stream_options.include_usage (a last chunk with usage). Any other
//   field is a 400 listing the supported ones. The response's "model" is the served model.
// - A prompt plus max_tokens beyond Service::max_context() is a 400.
// - logprobs (legacy format): {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; with echo
//   the prompt tokens come first, the first with null logprob and null top_logprobs. Tokens that are
//   not valid UTF-8 on their own read "bytes:\xNN..."; text_offset counts bytes of the choice's
//   text; a non-finite logprob is sent as the lowest float. The text is valid UTF-8 (invalid bytes
//   become U+FFFD; streaming holds a split character back until it is complete).
// - Submit errors: QueueFull 429 (code "queue_full"), mor::Error 400 (param from its "field: "
//   prefix), anything else 500. A generation that ends "abort" with Service error() is a 500, or,
//   streamed, a final data: {"error": ...} event before [DONE].
// - Streaming: a client that goes away is noticed at the next write and its requests cancel()ed.
//   A non-streamed request is not watched: it runs to its end.
// Shutdown: stop() closes the listening socket; a stream ends (cancelled) at its next token,
// non-streamed requests finish, and run() returns when the connection threads are done (idle
// keep-alive connections can hold it up to 5 s). The constructor ignores SIGPIPE process-wide
// (writes to closed sockets would otherwise kill the process).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "mor/engine/service.h"

namespace mor::engine {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port (see bound_port())
  int threads = 256;                 // connection threads (streaming clients each hold one)
  int64_t max_body_bytes = 1 << 22;  // larger requests get 413
  double read_timeout_s = 30.0;
  double write_timeout_s = 600.0;
};

class HttpServer {
 public:
  HttpServer(Service& service, HttpServerOptions options);
  ~HttpServer();
  // Binds the socket (SO_REUSEADDR, not SO_REUSEPORT: a port in use fails; listen backlog
  // SOMAXCONN); throws mor::Error "cannot listen on HOST:PORT: reason". Returns the port.
  int bind();
  int bound_port() const;
  // Serves until stop() (from another thread or a signal handler thread). bind() first.
  void run();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mor::engine
