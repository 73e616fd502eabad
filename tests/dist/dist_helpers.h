// Multi-rank tests in one process: every rank is a thread with its own Gloo communicator, meeting
// through a c10d FileStore in a fresh temporary file (no ports, no races between tests).
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mor/dist/comm.h"

namespace mor::testing {

inline std::string unique_temp_path(const std::string& stem) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::temp_directory_path();
  return (dir / (stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++))).string();
}

// Runs fn(rank, store) on `world` threads that meet through one fresh FileStore path; rethrows the
// first exception of any rank after all joined.
inline void run_rank_threads(int64_t world, const std::function<void(int64_t rank, const std::string& store)>& fn) {
  const std::string store = unique_temp_path("mor-store");
  std::exception_ptr first;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r, store);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(mu);
        if (!first) first = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::error_code ec;
  std::filesystem::remove(store, ec);
  if (first) std::rethrow_exception(first);
}

// Runs fn(comm) on `world` threads, each with its own Gloo communicator.
inline void run_ranks(int64_t world, const std::function<void(dist::Communicator&)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  run_rank_threads(world, [&](int64_t rank, const std::string& store) {
    dist::CommOptions opts;
    opts.world.rank = rank;
    opts.world.world_size = world;
    opts.file_store = store;
    opts.timeout = timeout;
    auto comm = dist::make_communicator(opts);
    fn(*comm);
  });
}

}  // namespace mor::testing
