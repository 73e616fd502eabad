// `mor train CONFIG.yaml [--config more.yaml] [--set k=v] [--nproc N]`: one rank of a pretraining
// run (the world comes from torchrun-style variables), or, with --nproc N, a local launcher that
// starts N ranks of itself and supervises them.
//
// Exit codes: 0 finished, 1 error, 75 stopped by SIGTERM/SIGINT after saving a checkpoint (run
// the same command again to resume).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/train/trainer.h"

namespace mor::tools {

namespace {

constexpr int kExitInterrupted = 75;

std::atomic<bool> g_stop{false};
volatile sig_atomic_t g_signals = 0;

void on_stop_signal(int sig) {
  g_stop.store(true);
  if (++g_signals >= 2) {  // a second signal: stop now, without a checkpoint
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

// A TCP port that is free on the loopback interface right now.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  MOR_CHECK(fd >= 0, "--nproc: cannot create a socket: ", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  MOR_CHECK(ok, "--nproc: cannot find a free port on 127.0.0.1: ", std::strerror(errno));
  return ntohs(addr.sin_port);
}

struct TrainFlags {
  ConfigFlags config;
  int64_t nproc = 0;
  int64_t master_port = 0;
  bool no_resume = false;
};

// Starts `nproc` ranks of this executable and waits. A rank that fails makes the launcher kill the
// others at once (their last complete checkpoint stays valid); SIGTERM/SIGINT are forwarded.
int launch(const TrainFlags& f) {
  MOR_CHECK(std::getenv("WORLD_SIZE") == nullptr,
            "--nproc starts its own ranks; it cannot run under another launcher (WORLD_SIZE is set)");
  const int port = f.master_port > 0 ? static_cast<int>(f.master_port) : free_port();
  std::vector<std::string> args{"/proc/self/exe", "train"};
  for (const auto& file : f.config.files) args.push_back(file);
  for (const auto& o : f.config.overrides) {
    args.push_back("--set");
    args.push_back(o);
  }
  if (f.no_resume) args.push_back("--no-resume");

  install_stop_handlers();
  std::map<pid_t, int64_t> ranks;
  for (int64_t r = 0; r < f.nproc; ++r) {
    const pid_t pid = ::fork();
    MOR_CHECK(pid >= 0, "--nproc: fork failed: ", std::strerror(errno));
    if (pid == 0) {
      // Own process group: a terminal's Ctrl-C reaches only the launcher, which forwards one
      // SIGTERM (a rank getting both would take the second as "stop now, no checkpoint"). If the
      // launcher dies, the kernel sends the rank SIGTERM, so no rank is left orphaned.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() == 1) ::_exit(1);  // the launcher died before prctl took effect
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(f.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(f.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "mor: error: cannot start rank %lld: %s\n", static_cast<long long>(r), std::strerror(errno));
      ::_exit(1);
    }
    ranks[pid] = r;
  }
  int exit_code = 0;
  bool forwarded = false, failed = false;
  while (!ranks.empty()) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) {
        if (g_stop.load() && !forwarded) {
          for (const auto& [p, r] : ranks) ::kill(p, SIGTERM);
          forwarded = true;
        }
        continue;
      }
      break;
    }
    const auto it = ranks.find(pid);
    if (it == ranks.end()) continue;
    const int64_t rank = it->second;
    ranks.erase(it);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == kExitInterrupted && exit_code == 0) exit_code = kExitInterrupted;
    if (code != 0 && code != kExitInterrupted && !failed) {
      failed = true;
      exit_code = 1;
      std::fprintf(stderr, "mor: error: rank %lld %s %d; stopping the other %zu rank(s)\n", static_cast<long long>(rank),
                   WIFEXITED(status) ? "exited with status" : "was killed by signal",
                   WIFEXITED(status) ? code : WTERMSIG(status), ranks.size());
      for (const auto& [p, r] : ranks) ::kill(p, SIGKILL);
    }
  }
  return exit_code;
}

void register_train_commands(CLI::App& app, Action& action) {
  auto flags = std::make_shared<TrainFlags>();
  CLI::App* cmd = app.add_subcommand("train", "Pretrain a model from a YAML configuration (resumes automatically)");
  add_config_flags(*cmd, flags->config, /*positional=*/true);
  cmd->add_option("--nproc", flags->nproc, "Start N local ranks (Gloo on CPU, NCCL on GPUs) and supervise them")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  cmd->add_option("--master-port", flags->master_port, "Rendezvous port for --nproc (default: a free port)")
      ->check(CLI::Range(int64_t{1}, int64_t{65535}));
  cmd->add_flag("--no-resume", flags->no_resume,
                "Ignore existing checkpoints in train.out_dir (new checkpoints still go there)");
  cmd->callback([flags, &action] {
    action = [flags] {
      MOR_CHECK(!flags->config.files.empty(), "mor train: give a config file, e.g. configs/demo.yaml");
      const auto cfg = config::load(flags->config.files, flags->config.overrides);
      if (flags->nproc > 1) {
        (void)train::budget_steps(cfg, flags->nproc);  // batch split and budget errors before any rank starts
        return launch(*flags);
      }
      train::TrainOptions opts;
      opts.world = dist::world_from_env();
      opts.resume = !flags->no_resume;
      opts.stop = &g_stop;
      opts.faults = train::faults_from_env();
      install_stop_handlers();
      try {
        const auto result = train::train(cfg, opts);
        return result.interrupted ? kExitInterrupted : 0;
      } catch (const mor::Error& e) {
        if (opts.world.world_size > 1) throw mor::Error("rank " + std::to_string(opts.world.rank) + ": " + e.what());
        throw;
      }
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("train", register_train_commands);

}  // namespace mor::tools
