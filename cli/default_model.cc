#include "cli/default_model.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <vector>

#include "base/str_cat.h"

namespace micromoe::cli {
namespace {

std::string ExecutableDir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

}  // namespace

absl::StatusOr<std::string> FindDefaultModel() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("MICROMOE_MODEL"); env && *env) candidates.push_back(env);
  candidates.push_back(StrCat(MICROMOE_SOURCE_DIR, "/models/", kDefaultModelFile));
  candidates.push_back(StrCat(MICROMOE_INSTALL_PREFIX, "/share/micromoe/models/", kDefaultModelFile));
  if (const std::string dir = ExecutableDir(); !dir.empty()) {
    candidates.push_back(StrCat(dir, "/../share/micromoe/models/", kDefaultModelFile));
  }
  std::string searched;
  for (const std::string& c : candidates) {
    if (std::ifstream(c).good()) return c;
    searched += StrCat("\n  ", c);
  }
  return absl::NotFoundError(StrCat("no model given (-m) and the default model was not found in:", searched,
                                    "\nset MICROMOE_MODEL or pass -m MODEL"));
}

absl::StatusOr<std::string> ModelOrDefault(const std::string& path) {
  if (!path.empty()) return path;
  return FindDefaultModel();
}

}  // namespace micromoe::cli
