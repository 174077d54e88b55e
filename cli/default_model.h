// The model commands use when none is given: the shipped micromoe-tiny model,
// looked up in order in
//   1. $MICROMOE_MODEL (a file path),
//   2. the source tree the binary was built from: <source>/models/,
//   3. the install prefix: <prefix>/share/micromoe/models/,
//   4. next to the binary: <bin>/../share/micromoe/models/.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace micromoe::cli {

inline constexpr const char* kDefaultModelFile = "micromoe-tiny-8x256.gguf";

// The path of the default model, or NotFound listing every place searched.
absl::StatusOr<std::string> FindDefaultModel();

// `path` when non-empty, else FindDefaultModel().
absl::StatusOr<std::string> ModelOrDefault(const std::string& path);

}  // namespace micromoe::cli
