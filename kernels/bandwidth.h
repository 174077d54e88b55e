// The machine's memory read bandwidth, the bound for memory-bound decode.
#pragma once

namespace micromoe::kernels {

// Reads a 64-byte-aligned 512 MiB buffer (far larger than any cache) split
// across the oneTBB workers the caller allows, as plain 64-bit loads with
// independent sums; best of 3 passes, in bytes per second.
double MeasureReadBandwidth();

}  // namespace micromoe::kernels
