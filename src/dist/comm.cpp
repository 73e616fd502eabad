// Communicators: local (world of one), and c10d Gloo/NCCL process groups over a TCP or file store.
#include "mor/dist/comm.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <exception>

#include "backend_factory.h"
#include "mor/core/error.h"

namespace mor::dist {

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int64_t env_int(const char* name, const std::string& value, int64_t lo, int64_t hi) {
  size_t used = 0;
  int64_t out = 0;
  try {
    out = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MOR_CHECK(used == value.size() && used > 0, "environment variable ", name, "=\"", value,
            "\" is not an integer");
  MOR_CHECK(out >= lo && out <= hi, "environment variable ", name, "=", out, " is outside [", lo, ", ", hi, "]");
  return out;
}

class LocalComm final : public Communicator {
 public:
  int64_t rank() const override { return 0; }
  int64_t world_size() const override { return 1; }
  const char* backend() const override { return "local"; }
  void all_gather(at::Tensor& out, const at::Tensor& in) override {
    if (!out.is_same(in)) out.copy_(in.view_as(out));
  }
  void reduce_scatter_sum(at::Tensor& out, const at::Tensor& in) override {
    if (!out.is_same(in)) out.copy_(in.view_as(out));
  }
  void all_reduce_sum(at::Tensor&) override {}
  void all_reduce_max(at::Tensor&) override {}
  void broadcast(at::Tensor&, int64_t) override {}
  void barrier() override {}
};

class ProcessGroupComm final : public Communicator {
 public:
  ProcessGroupComm(c10::intrusive_ptr<c10d::Backend> pg, int64_t rank, int64_t world, const char* name,
                   std::chrono::milliseconds timeout)
      : pg_(std::move(pg)), rank_(rank), world_(world), name_(name), timeout_(timeout) {}

  int64_t rank() const override { return rank_; }
  int64_t world_size() const override { return world_; }
  const char* backend() const override { return name_; }

  void all_gather(at::Tensor& out, const at::Tensor& in) override {
    MOR_CHECK(out.numel() == in.numel() * world_, "all_gather: output holds ", out.numel(), " elements, expected ",
              in.numel() * world_);
    at::Tensor input = in;
    run("all_gather", [&] { return pg_->_allgather_base(out, input); });
  }
  void reduce_scatter_sum(at::Tensor& out, const at::Tensor& in) override {
    MOR_CHECK(in.numel() == out.numel() * world_, "reduce_scatter: input holds ", in.numel(),
              " elements, expected ", out.numel() * world_);
    at::Tensor input = in;
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    run("reduce_scatter", [&] { return pg_->_reduce_scatter_base(out, input, opts); });
  }
  void all_reduce_sum(at::Tensor& t) override { all_reduce(t, c10d::ReduceOp::SUM, "all_reduce(sum)"); }
  void all_reduce_max(at::Tensor& t) override { all_reduce(t, c10d::ReduceOp::MAX, "all_reduce(max)"); }
  void broadcast(at::Tensor& t, int64_t root) override {
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    run("broadcast", [&] { return pg_->broadcast(v, opts); });
  }
  void barrier() override {
    // A barrier is an all-reduce of one value: the same path (and timeout) on every backend.
    at::Tensor t = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device()));
    all_reduce(t, c10d::ReduceOp::SUM, "barrier");
    if (t.is_cuda()) (void)t.item<float>();
  }

 private:
  at::Device device() const { return std::string(name_) == "nccl" ? at::Device(at::kCUDA) : at::Device(at::kCPU); }

  void all_reduce(at::Tensor& t, c10d::ReduceOp op, const char* what) {
    std::vector<at::Tensor> v{t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = op;
    run(what, [&] { return pg_->allreduce(v, opts); });
  }

  template <class F>
  void run(const char* what, F&& start) {
    try {
      auto work = start();
      work->wait(timeout_);
    } catch (const mor::Error&) {
      throw;
    } catch (const std::exception& e) {
      std::string msg = e.what();
      if (const auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
      fail("rank ", rank_, ": collective ", what, " failed (", name_, "): ", msg,
           " — another rank probably stopped or timed out (train.dist_timeout_s); see its log");
    }
  }

  c10::intrusive_ptr<c10d::Backend> pg_;
  int64_t rank_, world_;
  const char* name_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

WorldInfo world_from_env() {
  WorldInfo w;
  const auto world = env("WORLD_SIZE");
  const auto rank = env("RANK");
  if (!world) {
    MOR_CHECK(!rank || *rank == "0", "environment variable RANK=", rank.value_or(""),
              " is set but WORLD_SIZE is not (launch with torchrun, srun or mor train --nproc)");
    return w;
  }
  w.world_size = env_int("WORLD_SIZE", *world, 1, 1 << 20);
  if (w.world_size == 1) return w;
  MOR_CHECK(rank.has_value(), "environment variable WORLD_SIZE=", w.world_size, " is set but RANK is not");
  w.rank = env_int("RANK", *rank, 0, w.world_size - 1);
  if (const auto local = env("LOCAL_RANK")) w.local_rank = env_int("LOCAL_RANK", *local, 0, 1 << 20);
  if (const auto addr = env("MASTER_ADDR")) w.master_addr = *addr;
  if (const auto port = env("MASTER_PORT")) w.master_port = env_int("MASTER_PORT", *port, 1, 65535);
  return w;
}

std::unique_ptr<Communicator> make_communicator(const CommOptions& options) {
  const WorldInfo& w = options.world;
  MOR_CHECK(w.world_size >= 1 && w.rank >= 0 && w.rank < w.world_size, "invalid world: rank ", w.rank,
            " of ", w.world_size);
  if (w.world_size == 1) return std::make_unique<LocalComm>();

  c10::intrusive_ptr<c10d::Store> store;
  try {
    if (!options.file_store.empty()) {
      store = c10::make_intrusive<c10d::FileStore>(options.file_store, static_cast<int>(w.world_size));
    } else {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(w.master_port);
      so.isServer = w.rank == 0;
      so.numWorkers = static_cast<size_t>(w.world_size);
      so.waitWorkers = true;
      so.timeout = options.timeout;
      store = c10::make_intrusive<c10d::TCPStore>(w.master_addr, so);
    }
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (const auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    fail("rank ", w.rank, ": rendezvous at ",
         options.file_store.empty() ? w.master_addr + ":" + std::to_string(w.master_port) : options.file_store,
         " failed: ", msg, " (check MASTER_ADDR/MASTER_PORT and that all ", w.world_size, " ranks started)");
  }

  try {
    if (options.device.is_cuda()) {
      const int index = options.device.has_index() ? options.device.index() : static_cast<int>(w.local_rank);
      auto pg = detail::make_nccl_backend(store, static_cast<int>(w.rank), static_cast<int>(w.world_size), index,
                                          options.timeout);
      return std::make_unique<ProcessGroupComm>(std::move(pg), w.rank, w.world_size, "nccl", options.timeout);
    }
    auto opts = c10d::ProcessGroupGloo::Options::create(options.timeout);
    const std::string host = options.file_store.empty() && w.master_addr != "localhost" &&
                                     w.master_addr != "127.0.0.1"
                                 ? std::string()
                                 : std::string("127.0.0.1");
    if (const auto ifname = env("GLOO_SOCKET_IFNAME"); ifname && host.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*ifname));
    } else {
      opts->devices.push_back(host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                           : c10d::ProcessGroupGloo::createDeviceForHostname(host));
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(w.rank),
                                                         static_cast<int>(w.world_size), opts);
    return std::make_unique<ProcessGroupComm>(std::move(pg), w.rank, w.world_size, "gloo", options.timeout);
  } catch (const mor::Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (const auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    fail("rank ", w.rank, ": creating the ", options.device.is_cuda() ? "NCCL" : "Gloo", " process group failed: ",
         msg);
  }
}

}  // namespace mor::dist
