// The HTTP front end over a fake engine: completions (JSON and SSE), echo + logprobs in the legacy
// format lm-evaluation-harness reads, request validation (every 400), 404/405/413/429/500, /health,
// /v1/models and /metrics.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "engine_http_testing.h"

namespace mor::engine {
namespace {

using namespace mor::engine::testing;

std::vector<int32_t> ids_of(const std::string& text) { return fixture_tokenizer().encode(text); }

TEST(EngineHttp, HealthModelsMetrics) {
  FakeService service;
  TestServer server(service);
  Reply health = get(server, "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.j, json({{"status", "ok"}}));

  Reply models = get(server, "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.j["object"], "list");
  EXPECT_EQ(models.j["data"][0]["id"], "fake-mor");
  EXPECT_EQ(models.j["data"][0]["max_model_len"], 256);

  ASSERT_EQ(post(server, json{{"prompt", "hello"}, {"max_tokens", 2}}).status, 200);
  Reply metrics = get(server, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type.rfind("text/plain", 0), 0u);
  const std::string& m = metrics.body;
  for (const char* line :
       {"# HELP mor_queue_waiting ", "# TYPE mor_queue_waiting gauge\n", "\nmor_queue_waiting 3\n",
        "\nmor_running 0\n", "\nmor_kv_blocks_used 5\n", "\nmor_kv_blocks_total 100\n",
        "\nmor_kv_bytes_used 1234\n", "\nmor_kv_bytes_total 5678\n", "# TYPE mor_requests_total counter\n",
        "\nmor_requests_total 1\n", "\nmor_requests_rejected_total 0\n", "\nmor_prompt_tokens_total 40\n",
        "\nmor_generated_tokens_total 41\n", "\nmor_generated_tokens_per_second 12.5\n",
        "# TYPE mor_depth_tokens counter\n", "\nmor_depth_tokens{depth=\"0\"} 0\n",
        "\nmor_depth_tokens{depth=\"1\"} 7\n", "\nmor_depth_tokens{depth=\"2\"} 9\n",
        "\nmor_http_responses_total{code=\"200\"} "}) {
    EXPECT_NE(m.find(line), std::string::npos) << "missing: " << line << "\n" << m;
  }
  // Every sample line belongs to a family announced by # TYPE.
  std::set<std::string> typed;
  size_t pos = 0;
  while (pos < m.size()) {
    const size_t end = m.find('\n', pos);
    ASSERT_NE(end, std::string::npos) << "the exposition ends with a newline";
    const std::string line = m.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("# TYPE ", 0) == 0) {
      typed.insert(line.substr(7, line.find(' ', 7) - 7));
    } else if (line.rfind("#", 0) != 0) {
      const std::string name = line.substr(0, line.find_first_of("{ "));
      EXPECT_TRUE(typed.count(name)) << line;
      EXPECT_EQ(name.rfind("mor_", 0), 0u) << line;
    }
  }
}

TEST(EngineHttp, CompletionFromString) {
  FakeService service;
  TestServer server(service);
  const json request = {{"model", "whatever"}, {"prompt", "Once upon a time"}, {"max_tokens", 5},
                        {"temperature", 0.5},  {"top_p", 0.9},                 {"top_k", 40},
                        {"seed", 7},           {"stop", "\n\n"},               {"user", "me"},
                        {"n", 1},              {"best_of", 1},                 {"presence_penalty", 0},
                        {"frequency_penalty", 0.0}, {"suffix", nullptr},       {"logit_bias", json::object()},
                        {"logprobs", nullptr}, {"stream", false},              {"ignore_eos", true}};
  Reply r = post(server, request);
  ASSERT_EQ(r.status, 200) << r.body;
  const json& j = r.j;
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(j["model"], "fake-mor");
  EXPECT_TRUE(j["created"].is_number_integer());
  const auto prompt = ids_of("Once upon a time");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], service.text_for(prompt, 5));
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"], json({{"prompt_tokens", prompt.size()}, {"completion_tokens", 5},
                              {"total_tokens", prompt.size() + 5}}));

  const CompletionRequest seen = service.last_request();
  EXPECT_EQ(seen.prompt, prompt);
  EXPECT_FALSE(seen.echo);
  SamplingParams want;
  want.temperature = 0.5;
  want.top_p = 0.9;
  want.top_k = 40;
  want.seed = 7;
  want.max_tokens = 5;
  want.stop = {"\n\n"};
  want.ignore_eos = true;
  EXPECT_EQ(seen.sampling, want);
}

TEST(EngineHttp, CompletionFromTokenIdsAndDefaults) {
  FakeService service(FakeConfig{.eos_after = 3});
  TestServer server(service);
  const std::vector<int32_t> prompt = {5, 17, 599, 0};
  Reply r = post(server, json{{"prompt", prompt}, {"top_k", -1}, {"stop", {"a", "b"}}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j["choices"][0]["text"], service.text_for(prompt, 3));
  EXPECT_EQ(r.j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r.j["usage"]["completion_tokens"], 3);
  const CompletionRequest seen = service.last_request();
  EXPECT_EQ(seen.prompt, prompt);
  SamplingParams defaults;
  defaults.stop = {"a", "b"};
  EXPECT_EQ(seen.sampling, defaults);  // max_tokens 16, temperature 1, top_k -1 -> 0, no seed
}

TEST(EngineHttp, StreamMatchesNonStreamed) {
  FakeService service(FakeConfig{.delay = std::chrono::microseconds(200)});
  TestServer server(service);
  const json base = {{"prompt", "The streaming test"}, {"max_tokens", 12}, {"seed", 3}};
  Reply plain = post(server, base);
  ASSERT_EQ(plain.status, 200) << plain.body;

  json streamed = base;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  Reply r = post(server, streamed);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type.rfind("text/event-stream", 0), 0u);
  const Events events = parse_sse(r.body);
  ASSERT_TRUE(events.well_formed) << r.body;
  ASSERT_TRUE(events.done);
  ASSERT_GE(events.chunks.size(), 3u);
  EXPECT_EQ(r.body.substr(r.body.size() - 14), "data: [DONE]\n\n");
  std::string id;
  for (size_t i = 0; i + 1 < events.chunks.size(); ++i) {
    const json& c = events.chunks[i];
    EXPECT_EQ(c["object"], "text_completion");
    EXPECT_EQ(c["model"], "fake-mor");
    if (id.empty()) id = c["id"];
    EXPECT_EQ(c["id"], id);
    ASSERT_EQ(c["choices"].size(), 1u);
    EXPECT_EQ(c["choices"][0]["index"], 0);
    const bool last = i + 2 == events.chunks.size();
    EXPECT_EQ(c["choices"][0]["finish_reason"], last ? json("length") : json(nullptr)) << c;
  }
  const json& usage = events.chunks.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"], plain.j["usage"]);
  EXPECT_EQ(stream_texts(events)[0], plain.j["choices"][0]["text"]);
}

TEST(EngineHttp, SplitUtf8CharactersStayWhole) {
  FakeService service(FakeConfig{.split_utf8 = true});
  TestServer server(service);
  Reply plain = post(server, json{{"prompt", "x"}, {"max_tokens", 7}, {"logprobs", 0}});
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.j["choices"][0]["text"], "h\xC3\xA9\xE2\x82\xAC!");
  const json& lp = plain.j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({"h", "bytes:\\xc3", "bytes:\\xa9", "bytes:\\xe2", "bytes:\\x82", "bytes:\\xac", "!"}));
  EXPECT_EQ(lp["text_offset"], json({0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(lp["top_logprobs"][1], json::object());
  // Cut short inside a character: the dangling byte becomes U+FFFD in both forms.
  Reply cut = post(server, json{{"prompt", "x"}, {"max_tokens", 4}});
  EXPECT_EQ(cut.j["choices"][0]["text"], "h\xC3\xA9\xEF\xBF\xBD");
  for (const int n : {4, 7}) {
    Reply r = post(server, json{{"prompt", "x"}, {"max_tokens", n}, {"stream", true}});
    const Events events = parse_sse(r.body);
    ASSERT_TRUE(events.well_formed && events.done) << r.body;
    EXPECT_EQ(stream_texts(events)[0], n == 7 ? plain.j["choices"][0]["text"] : cut.j["choices"][0]["text"]);
  }
}

// lm-evaluation-harness's LocalCompletionsAPI.parse_logprobs, replicated: the sum of
// token_logprobs[ctxlen:-1] and whether each of those is the top alternative.
std::pair<double, bool> harness_parse_logprobs(const json& choice, size_t ctxlen) {
  const json& lp = choice["logprobs"];
  const auto& token_logprobs = lp["token_logprobs"];
  const auto& top_logprobs = lp["top_logprobs"];
  double sum = 0.0;
  bool greedy = true;
  for (size_t i = ctxlen; i + 1 < token_logprobs.size(); ++i) {
    sum += token_logprobs[i].get<double>();
    double best = -INFINITY;
    for (const auto& item : top_logprobs[i].items()) best = std::max(best, item.value().get<double>());
    if (token_logprobs[i].get<double>() != best) greedy = false;
  }
  return {sum, greedy};
}

TEST(EngineHttp, EchoLogprobsLegacyFormat) {
  FakeService service;
  TestServer server(service);
  const std::string text = "Scoring the prompt, please";
  const auto prompt = ids_of(text);
  ASSERT_GE(prompt.size(), 3u);
  Reply r = post(server, json{{"prompt", text}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 2}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json& c = r.j["choices"][0];
  EXPECT_EQ(c["text"], text);
  const json& lp = c["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), prompt.size());
  ASSERT_EQ(lp["token_logprobs"].size(), prompt.size());
  ASSERT_EQ(lp["top_logprobs"].size(), prompt.size());
  ASSERT_EQ(lp["text_offset"].size(), prompt.size());
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  for (size_t i = 0; i < prompt.size(); ++i) {
    const int32_t id[1] = {prompt[i]};
    const std::string token = fixture_tokenizer().decode(id);
    EXPECT_EQ(lp["tokens"][i], token);
    const auto offset = lp["text_offset"][i].get<size_t>();
    EXPECT_EQ(text.substr(offset, token.size()), token);
    if (i == 0) continue;
    EXPECT_EQ(lp["token_logprobs"][i].get<double>(), double(fake_logprob(i)));
    ASSERT_EQ(lp["top_logprobs"][i].size(), 2u);
    EXPECT_EQ(lp["top_logprobs"][i][token].get<double>(), double(fake_logprob(i)));
  }
  EXPECT_EQ(r.j["usage"]["completion_tokens"], 0);
  EXPECT_TRUE(service.last_request().echo);
}

TEST(EngineHttp, HarnessLoglikelihoodRequest) {
  // What local-completions sends for loglikelihood: a batch of token lists, echo, logprobs 1,
  // max_tokens 1, temperature 0, a seed and a model name.
  FakeService service;
  TestServer server(service);
  const std::vector<std::vector<int32_t>> batch = {ids_of("Question: two plus two? Answer: four"),
                                                   ids_of("Short one")};
  const json request = {{"model", "HuggingFaceTB/SmolLM2-135M"}, {"prompt", batch}, {"temperature", 0},
                        {"max_tokens", 1}, {"logprobs", 1}, {"seed", 1234}, {"echo", true}};
  Reply r = post(server, request);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j["choices"].size(), 2u);
  for (size_t b = 0; b < batch.size(); ++b) {
    const json& c = r.j["choices"][b];
    EXPECT_EQ(c["index"], b);
    ASSERT_EQ(c["logprobs"]["token_logprobs"].size(), batch[b].size() + 1);
    const size_t ctxlen = 2;  // score the continuation tokens after the first two
    const auto [sum, greedy] = harness_parse_logprobs(c, ctxlen);
    double want = 0.0;
    for (size_t i = ctxlen; i < batch[b].size(); ++i) want += double(fake_logprob(i));
    EXPECT_DOUBLE_EQ(sum, want);
    EXPECT_TRUE(greedy);
  }
  EXPECT_EQ(r.j["usage"]["prompt_tokens"], batch[0].size() + batch[1].size());
  EXPECT_EQ(r.j["usage"]["completion_tokens"], 2);
}

TEST(EngineHttp, EchoStreamedAndDepths) {
  FakeService service;
  TestServer server(service);
  const std::string text = "Echo me";
  const auto prompt = ids_of(text);
  const json base = {{"prompt", text}, {"max_tokens", 4}, {"echo", true}, {"mor", {{"depths", true}}}};
  Reply plain = post(server, base);
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.j["choices"][0]["text"], text + service.text_for(prompt, 4));
  const json& depths = plain.j["choices"][0]["mor"]["depths"];
  ASSERT_EQ(depths.size(), prompt.size() + 4);
  const auto generated = service.tokens_for(prompt, 4);
  EXPECT_EQ(depths[0], 1 + prompt[0] % 3);
  EXPECT_EQ(depths[prompt.size()], 1 + generated[0] % 3);

  json streamed = base;
  streamed["stream"] = true;
  Reply r = post(server, streamed);
  const Events events = parse_sse(r.body);
  ASSERT_TRUE(events.well_formed && events.done) << r.body;
  EXPECT_EQ(events.chunks.front()["choices"][0]["text"], text);
  EXPECT_EQ(stream_texts(events)[0], plain.j["choices"][0]["text"]);
  json all_depths = json::array();
  for (const json& c : events.chunks)
    for (const json& d : c["choices"][0]["mor"]["depths"]) all_depths.push_back(d);
  EXPECT_EQ(all_depths, depths);
}

TEST(EngineHttp, BatchOfStrings) {
  FakeService service;
  TestServer server(service);
  Reply r = post(server, json{{"prompt", {"first prompt", "second"}}, {"max_tokens", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j["choices"].size(), 2u);
  EXPECT_EQ(r.j["choices"][0]["text"], service.text_for(ids_of("first prompt"), 3));
  EXPECT_EQ(r.j["choices"][1]["text"], service.text_for(ids_of("second"), 3));
  EXPECT_EQ(r.j["choices"][1]["index"], 1);

  Reply s = post(server, json{{"prompt", {"first prompt", "second"}}, {"max_tokens", 3}, {"stream", true}});
  const Events events = parse_sse(s.body);
  ASSERT_TRUE(events.well_formed && events.done) << s.body;
  const auto texts = stream_texts(events);
  EXPECT_EQ(texts.at(0), r.j["choices"][0]["text"]);
  EXPECT_EQ(texts.at(1), r.j["choices"][1]["text"]);
}

struct BadCase {
  std::string body;
  std::string param;  // "" for null
  std::string message_part;
};

TEST(EngineHttp, BadRequests) {
  FakeService service;
  TestServer server(service);
  const std::string long_prompt = json(std::vector<int32_t>(300, 7)).dump();
  const std::string fits = json(std::vector<int32_t>(250, 7)).dump();
  const std::vector<BadCase> cases = {
      {"{not json", "", "malformed JSON"},
      {"", "", "malformed JSON"},
      {"[1, 2]", "", "must be a JSON object, got array"},
      {"{}", "prompt", "prompt: required"},
      {R"({"prompt": null})", "prompt", "prompt: required"},
      {R"({"prompt": "a", "max_tokens": "5"})", "max_tokens", "max_tokens: must be an integer, got string"},
      {R"({"prompt": "a", "max_tokens": 1.5})", "max_tokens", "must be an integer, got number"},
      {R"({"prompt": "a", "max_tokens": -1})", "max_tokens", "max_tokens: must be >= 0"},
      {R"({"prompt": "a", "temperature": "hot"})", "temperature", "temperature: must be a number, got string"},
      {R"({"prompt": "a", "temperature": true})", "temperature", "got boolean"},
      {R"({"prompt": "a", "temperature": 3})", "temperature", "temperature: must be in [0, 2]"},
      {R"({"prompt": "a", "top_p": []})", "top_p", "top_p: must be a number, got array"},
      {R"({"prompt": "a", "top_p": 0})", "top_p", "top_p: must be in (0, 1]"},
      {R"({"prompt": "a", "top_k": 2.0})", "top_k", "top_k: must be an integer"},
      {R"({"prompt": "a", "top_k": -5})", "top_k", "top_k: must be >= 0"},
      {R"({"prompt": "a", "seed": -1})", "seed", "seed: must be a non-negative integer"},
      {R"({"prompt": "a", "seed": "1"})", "seed", "seed: must be an integer, got string"},
      {R"({"prompt": "a", "stop": 5})", "stop", "stop: must be a string or a list of strings"},
      {R"({"prompt": "a", "stop": ["x", 1]})", "stop", "stop: must be a string or a list of strings"},
      {R"({"prompt": "a", "stop": [""]})", "stop", "stop: strings must not be empty"},
      {R"({"prompt": "a", "stream": "yes"})", "stream", "stream: must be a boolean, got string"},
      {R"({"prompt": "a", "stream_options": {"x": 1}})", "stream_options.x", "unknown field 'x'"},
      {R"({"prompt": "a", "stream_options": {"include_usage": 1}})", "stream_options.include_usage",
       "must be a boolean"},
      {R"({"prompt": "a", "echo": 1})", "echo", "echo: must be a boolean, got integer"},
      {R"({"prompt": "a", "logprobs": true})", "logprobs", "logprobs: must be an integer, got boolean"},
      {R"({"prompt": "a", "logprobs": 21})", "logprobs", "logprobs: must be in [0, 20]"},
      {R"({"prompt": "a", "n": 2})", "n", "n: only 1 is supported, got 2"},
      {R"({"prompt": "a", "n": "1"})", "n", "n: must be an integer"},
      {R"({"prompt": "a", "best_of": 3})", "best_of", "best_of: only 1 is supported"},
      {R"({"prompt": "a", "presence_penalty": 0.5})", "presence_penalty", "only 0 is supported"},
      {R"({"prompt": "a", "frequency_penalty": "0"})", "frequency_penalty", "must be a number"},
      {R"({"prompt": "a", "logit_bias": {"5": 10}})", "logit_bias", "not supported"},
      {R"({"prompt": "a", "suffix": "x"})", "suffix", "suffix: not supported"},
      {R"({"prompt": "a", "user": 5})", "user", "user: must be a string"},
      {R"({"prompt": "a", "model": ["m"]})", "model", "model: must be a string, got array"},
      {R"({"prompt": "a", "ignore_eos": "no"})", "ignore_eos", "must be a boolean"},
      {R"({"prompt": "a", "mor": {"depth": true}})", "mor.depth", "unknown field 'depth'"},
      {R"({"prompt": "a", "mor": true})", "mor", "mor: must be an object"},
      {R"({"prompt": "a", "foo": 1})", "foo", "unknown field 'foo'; supported: prompt, model, max_tokens"},
      {R"({"prompt": "a", "messages": []})", "messages", "unknown field 'messages'"},
      {R"({"prompt": ""})", "prompt", "prompt: must not be empty"},
      {R"({"prompt": []})", "prompt", "prompt: must not be empty"},
      {R"({"prompt": [[]]})", "prompt", "prompt[0]: must not be empty"},
      {R"({"prompt": [1, 600]})", "prompt", "prompt: token id 600 is out of range [0, 600)"},
      {R"({"prompt": [-1]})", "prompt", "token id -1 is out of range"},
      {R"({"prompt": [18446744073709551615]})", "prompt", "is out of range"},
      {R"({"prompt": [1, "a"]})", "prompt", "token ids must be integers, got string"},
      {R"({"prompt": [1.5]})", "prompt", "token ids must be integers, got number"},
      {R"({"prompt": 5})", "prompt", "prompt: must be a string or a list of token ids, got integer"},
      {R"({"prompt": {"a": 1}})", "prompt", "got object"},
      {R"({"prompt": [[1], "a"]})", "prompt", "prompt[1]: a batch must be all strings or all token lists"},
      {R"({"prompt": ["a", [1, 700]]})", "prompt", "a batch must be all strings"},
      {R"({"prompt": [[1], [1, 700]]})", "prompt", "prompt[1]: token id 700 is out of range"},
      {R"({"prompt": )" + long_prompt + "}", "prompt", "the model's context is 256 tokens; this request needs 300"},
      {R"({"prompt": )" + fits + R"(, "max_tokens": 10})", "max_tokens",
       "needs 250 (prompt) + 10 (max_tokens)"},
  };
  for (const BadCase& c : cases) {
    Reply r = post(server, c.body);
    ASSERT_EQ(r.status, 400) << c.body << " -> " << r.body;
    ASSERT_TRUE(r.j.is_object()) << r.body;
    const json& e = r.j["error"];
    EXPECT_EQ(e["type"], "invalid_request_error") << c.body;
    EXPECT_EQ(e["param"], c.param.empty() ? json(nullptr) : json(c.param)) << c.body << " -> " << r.body;
    EXPECT_NE(e["message"].get<std::string>().find(c.message_part), std::string::npos)
        << c.body << " -> " << e["message"];
    EXPECT_TRUE(e.contains("code"));
  }
  EXPECT_EQ(service.submitted_.load(), 0);
  EXPECT_EQ(get(server, "/health").status, 200);
}

TEST(EngineHttp, NotFoundMethodNotAllowedTooLarge) {
  FakeService service;
  HttpServerOptions options;
  options.max_body_bytes = 4096;
  TestServer server(service, options);
  Reply missing = get(server, "/v1/chat/completions");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.j["error"]["message"].get<std::string>().find("not found: /v1/chat/completions"),
            std::string::npos);
  EXPECT_EQ(post(server, "{}", "/nowhere").status, 404);

  Reply wrong = get(server, "/v1/completions");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.headers.find("Allow")->second, "POST");
  EXPECT_TRUE(wrong.j["error"].is_object());
  EXPECT_EQ(post(server, "{}", "/health").status, 405);
  EXPECT_EQ(to_reply(server.client()->Delete("/metrics")).status, 405);
  EXPECT_EQ(to_reply(server.client()->Head("/health")).status, 200);

  const std::string big = json{{"prompt", std::string(5000, 'x')}}.dump();
  Reply large = post(server, big);
  EXPECT_EQ(large.status, 413);
  EXPECT_NE(large.j["error"]["message"].get<std::string>().find("too large"), std::string::npos);
  // A form-encoded body (curl -d without a content type) is read as JSON all the same.
  Reply form = to_reply(server.client()->Post("/v1/completions", json{{"prompt", "hi"}, {"max_tokens", 1}}.dump(),
                                              "application/x-www-form-urlencoded"));
  EXPECT_EQ(form.status, 200) << form.body;
  EXPECT_EQ(get(server, "/health").status, 200);
}

TEST(EngineHttp, QueueFullIs429) {
  FakeService service(FakeConfig{.capacity = 1, .gated = true});
  TestServer server(service);
  std::thread holder([&] {
    Reply r = post(server, json{{"prompt", "hold"}, {"max_tokens", 2}, {"stream", true}});
    EXPECT_EQ(r.status, 200);
  });
  for (int i = 0; i < 2000 && service.live() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(service.live(), 1);
  for (const bool stream : {false, true}) {
    Reply r = post(server, json{{"prompt", "rejected"}, {"stream", stream}});
    EXPECT_EQ(r.status, 429) << r.body;
    EXPECT_EQ(r.j["error"]["code"], "queue_full");
    EXPECT_EQ(r.j["error"]["type"], "rate_limit_error");
  }
  EXPECT_EQ(service.rejected_.load(), 2);
  EXPECT_NE(get(server, "/metrics").body.find("\nmor_requests_rejected_total 2\n"), std::string::npos);
  service.open_gate();
  holder.join();
}

TEST(EngineHttp, EngineErrors) {
  {
    FakeService service(FakeConfig{.throw_on_submit = "mor"});
    TestServer server(service);
    Reply r = post(server, json{{"prompt", "x"}});
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.j["error"]["param"], "prompt");
    EXPECT_EQ(r.j["error"]["message"], "prompt: the fake engine refuses this prompt");
  }
  {
    FakeService service(FakeConfig{.throw_on_submit = "other"});
    TestServer server(service);
    Reply r = post(server, json{{"prompt", "x"}, {"stream", true}});
    EXPECT_EQ(r.status, 500);
    EXPECT_EQ(r.j["error"]["type"], "server_error");
    EXPECT_NE(r.j["error"]["message"].get<std::string>().find("fake engine exploded"), std::string::npos);
    EXPECT_EQ(get(server, "/health").status, 200);
  }
  {
    FakeService service(FakeConfig{.engine_error = "device lost"});
    TestServer server(service);
    Reply r = post(server, json{{"prompt", "x"}, {"max_tokens", 2}});
    EXPECT_EQ(r.status, 500);
    EXPECT_NE(r.j["error"]["message"].get<std::string>().find("device lost"), std::string::npos);
    Reply s = post(server, json{{"prompt", "x"}, {"max_tokens", 2}, {"stream", true}});
    EXPECT_EQ(s.status, 200);
    const Events events = parse_sse(s.body);
    ASSERT_TRUE(events.well_formed && events.done) << s.body;
    EXPECT_EQ(events.chunks.at(events.chunks.size() - 2)["choices"][0]["finish_reason"], "abort");
    EXPECT_NE(events.chunks.back()["error"]["message"].get<std::string>().find("device lost"), std::string::npos);
  }
}

TEST(EngineHttp, BindFailureNamesTheAddress) {
  FakeService service;
  TestServer first(service);
  HttpServerOptions options;
  options.port = first.port();
  HttpServer second(service, options);
  try {
    second.bind();
    FAIL() << "expected mor::Error";
  } catch (const mor::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on 127.0.0.1:" + std::to_string(first.port())),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace mor::engine
