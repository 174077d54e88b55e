// Blocks until SIGINT or SIGTERM arrives (for servers' graceful shutdown).
#pragma once

namespace micromoe::server {

// Blocks SIGINT/SIGTERM in the calling thread and every thread it starts
// afterwards; call it first in main-like functions, before starting threads.
void BlockShutdownSignals();
// Waits for one of them (after BlockShutdownSignals).
void WaitForShutdownSignal();

}  // namespace micromoe::server
