#include "server/shutdown_signal.h"

#include <pthread.h>
#include <signal.h>

namespace micromoe::server {
namespace {

sigset_t ShutdownSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void WaitForShutdownSignal() {
  const sigset_t set = ShutdownSet();
  int sig = 0;
  sigwait(&set, &sig);
}

}  // namespace micromoe::server
