// A micromoe server process (serve or expert-node) started by a test or a
// benchmark: waits (bounded) for its "listening on HOST:PORT" line, is killed
// and reaped on destruction, and dies with its parent (PR_SET_PDEATHSIG), so
// nothing leaves a server behind or hangs on one. No test framework needed.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace micromoe::testing_support {

class ChildProcess {
 public:
  using Clock = std::chrono::steady_clock;

  // Runs `binary args...` with stderr to `log_path`; nullptr, with the reason
  // in *error, when it exits early or prints no "listening on" line within 10 s.
  static std::unique_ptr<ChildProcess> Start(const std::string& binary, const std::vector<std::string>& args,
                                             const std::string& log_path, std::string* error) {
    auto child = std::unique_ptr<ChildProcess>(new ChildProcess);
    child->log_path_ = log_path;
    std::vector<std::string> all = {binary};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {  // only async-signal-safe calls until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(null_fd, 0);
      ::dup2(null_fd, 1);
      ::dup2(log_fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(log_fd);
    ::close(null_fd);
    if (pid < 0) {
      *error = "fork failed";
      return nullptr;
    }
    child->pid_ = pid;
    const Clock::time_point start = Clock::now();
    while (MsSince(start) < 10000) {
      const std::string log = child->log();
      const size_t at = log.find("listening on ");
      if (at != std::string::npos && log.find('\n', at) != std::string::npos) {
        std::string line = log.substr(at + 13, log.find('\n', at) - at - 13);
        line = line.substr(0, line.find(' '));
        child->address_ = line;
        child->port_ = std::stoi(line.substr(line.rfind(':') + 1));
        return child;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        child->pid_ = -1;
        *error = "server exited early:\n" + log;
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    *error = "server did not start in 10 s:\n" + child->log();
    return nullptr;
  }

  ~ChildProcess() {
    Kill();
    if (!keep_log_) std::remove(log_path_.c_str());
  }
  // Keeps the log file after destruction (for a failing test).
  void keep_log() { keep_log_ = true; }

  const std::string& address() const { return address_; }
  int port() const { return port_; }
  std::string log() const {
    std::ifstream in(log_path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  void Kill() { Signal(SIGKILL, 5000); }
  // SIGSTOP; true once the process is stopped (bounded).
  bool Pause() {
    ::kill(pid_, SIGSTOP);
    const Clock::time_point start = Clock::now();
    int status = 0;
    while (MsSince(start) < 5000) {
      if (::waitpid(pid_, &status, WUNTRACED | WNOHANG) == pid_ && WIFSTOPPED(status)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  void Resume() { ::kill(pid_, SIGCONT); }
  // SIGTERM; true when it exited within `ms` with status 0.
  bool Terminate(int ms) { return Signal(SIGTERM, ms) == 0; }

  static double MsSince(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  }

 private:
  ChildProcess() = default;
  // Sends `sig`, waits at most `ms` for the exit (then SIGKILL); returns the
  // exit status (-1 when killed by a signal or not running).
  int Signal(int sig, int ms) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0, code = -1;
    const Clock::time_point start = Clock::now();
    while (true) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        break;
      }
      if (MsSince(start) > ms) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);  // SIGKILL cannot be ignored
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    pid_ = -1;
    return code;
  }

  pid_t pid_ = -1;
  bool keep_log_ = false;
  int port_ = 0;
  std::string address_, log_path_;
};

}  // namespace micromoe::testing_support
