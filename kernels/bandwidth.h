// The machine's memory read bandwidth, the bound for memory-bound decode.
#pragma once

namespace micromoe::kernels {

// Reads a 64-byte-aligned 512 MiB buffer (far larger than any cache) split
// across the oneTBB workers the caller allows, one 64-bit load per cache line,
// each worker's piece as four interleaved streams (one core streamed 28-29
// GB/s as one sequential stream and 34-38 as four here, so one stream
// understated the bound); best of 5 passes, in bytes per second.
double MeasureReadBandwidth();

}  // namespace micromoe::kernels
