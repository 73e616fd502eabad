// The HTTP front end under load and when clients go away: 200 concurrent streaming clients all get
// complete, valid streams; a client that disconnects mid-stream gets its request cancelled; stop()
// during a stream returns. Correctness only, no timing assertions.
#include <gtest/gtest.h>

#include "engine_http_testing.h"

namespace mor::engine {
namespace {

using namespace mor::engine::testing;

// Waits (up to 20 s) for `done`; true when it happened.
template <typename F>
bool eventually(F done) {
  for (int i = 0; i < 4000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

TEST(EngineHttpLoad, ConcurrentStreamingClients) {
  FakeService service(FakeConfig{.delay = std::chrono::milliseconds(1)});
  TestServer server(service);  // 256 connection threads by default
  constexpr int kClients = 200;
  constexpr int kTokens = 8;
  std::vector<std::string> failures(kClients);
  std::vector<std::thread> threads;
  threads.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      const std::string prompt = "client number " + std::to_string(i);
      const json request = {{"prompt", prompt}, {"max_tokens", kTokens}, {"stream", true}};
      auto client = server.client();
      auto result = client->Post("/v1/completions", request.dump(), "application/json");
      if (!result) {
        failures[i] = "no response: " + httplib::to_string(result.error());
        return;
      }
      if (result->status != 200) {
        failures[i] = "status " + std::to_string(result->status) + ": " + result->body;
        return;
      }
      const Events events = parse_sse(result->body);
      const std::string want = service.text_for(fixture_tokenizer().encode(prompt), kTokens);
      if (!events.well_formed || !events.done) {
        failures[i] = "malformed stream: " + result->body;
      } else if (stream_texts(events)[0] != want) {
        failures[i] = "text " + stream_texts(events)[0] + " != " + want;
      } else if (events.chunks.back()["choices"][0]["finish_reason"] != "length") {
        failures[i] = "no finish_reason in the last chunk";
      }
    });
  }
  for (auto& t : threads) t.join();
  int failed = 0;
  for (int i = 0; i < kClients; ++i) {
    if (failures[i].empty()) continue;
    if (++failed <= 5) ADD_FAILURE() << "client " << i << ": " << failures[i];
  }
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(service.submitted_.load(), kClients);
  EXPECT_EQ(service.cancels(), 0);
  Reply health = get(server, "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.j["status"], "ok");
  EXPECT_TRUE(eventually([&] { return service.live() == 0; }));
}

TEST(EngineHttpLoad, DisconnectMidStreamCancels) {
  FakeService service(FakeConfig{.delay = std::chrono::milliseconds(2), .max_context = 1 << 20});
  TestServer server(service);
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/completions";
  request.body = json{{"prompt", "a long story"}, {"max_tokens", 100000}, {"stream", true}}.dump();
  request.set_header("Content-Type", "application/json");
  std::atomic<int> pieces{0};
  request.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++pieces < 3; };
  auto client = server.client();
  auto result = client->send(request);
  EXPECT_FALSE(result);  // the client gave up: httplib reports Canceled
  EXPECT_EQ(result.error(), httplib::Error::Canceled);
  client.reset();  // closes the socket
  EXPECT_TRUE(eventually([&] { return service.cancels() == 1; }));
  EXPECT_TRUE(eventually([&] { return service.live() == 0; }));
  EXPECT_EQ(get(server, "/health").status, 200);
}

TEST(EngineHttpLoad, StopDuringStreamReturns) {
  FakeService service(FakeConfig{.delay = std::chrono::milliseconds(2), .max_context = 1 << 20});
  auto server = std::make_unique<TestServer>(service);
  std::atomic<int> pieces{0};
  std::thread client_thread([&] {
    httplib::Request request;
    request.method = "POST";
    request.path = "/v1/completions";
    request.body = json{{"prompt", "endless"}, {"max_tokens", 100000}, {"stream", true}}.dump();
    request.set_header("Content-Type", "application/json");
    request.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      ++pieces;
      return true;
    };
    auto client = server->client();
    client->send(request);  // ends when the server goes away
  });
  ASSERT_TRUE(eventually([&] { return pieces.load() > 2; }));
  server->stop();  // returns once the stream noticed (it ends at its next token)
  client_thread.join();
  EXPECT_TRUE(eventually([&] { return service.cancels() == 1; }));
  EXPECT_TRUE(eventually([&] { return service.live() == 0; }));
  server.reset();
}

}  // namespace
}  // namespace mor::engine
