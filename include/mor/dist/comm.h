// Collective communication for data-parallel training: a thin layer over LibTorch's c10d process
// groups (Gloo on CPU, NCCL on CUDA), plus the torchrun-style world description from the
// environment. A world of one needs no process group: every collective is a local copy.
//
// Every collective is synchronous for the caller and bounded by the timeout: when another rank
// dies, the survivors get a mor::Error naming the collective instead of hanging.
// Tensors: contiguous, on the communicator's device, same dtype on every rank.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace mor::dist {

// The launch environment (torchrun, SLURM wrappers, `mor train --nproc`).
struct WorldInfo {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without WORLD_SIZE (or with
// WORLD_SIZE=1) this is a single process. Throws mor::Error naming the variable that is malformed
// or missing (RANK without WORLD_SIZE, RANK >= WORLD_SIZE, a port outside 1..65535, ...).
WorldInfo world_from_env();

struct CommOptions {
  WorldInfo world;
  at::Device device = at::kCPU;  // CUDA devices use NCCL, CPU uses Gloo
  std::chrono::milliseconds timeout{300000};
  // Non-empty: rendezvous through this file (c10d FileStore; tests, shared filesystems) instead of
  // a TCP store at master_addr:master_port.
  std::string file_store;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;
  virtual const char* backend() const = 0;  // "local", "gloo" or "nccl"

  // out [world * n] <- the in [n] of every rank, in rank order.
  virtual void all_gather(at::Tensor& out, const at::Tensor& in) = 0;
  // out [n] <- sum over ranks of their in[rank(out) * n, (rank(out) + 1) * n).
  virtual void reduce_scatter_sum(at::Tensor& out, const at::Tensor& in) = 0;
  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  virtual void all_reduce_max(at::Tensor& tensor) = 0;
  virtual void broadcast(at::Tensor& tensor, int64_t root) = 0;
  virtual void barrier() = 0;
};

// World size 1: a local communicator (no process group, no network). Otherwise connects to the
// rendezvous (rank 0 hosts the TCP store) within the timeout and creates the process group.
// Throws mor::Error naming the address/port or the file on failure.
std::unique_ptr<Communicator> make_communicator(const CommOptions& options);

}  // namespace mor::dist
