// `micromoe route-stats`: how a text's tokens are routed, per layer and
// expert: share of routing slots, entropy, and an SVG heat-map.
#pragma once

#include <string>

namespace micromoe::cli {

struct RouteStatsArgs {
  std::string model, text_file, svg;
  int n_ctx = 128;
};

int RunRouteStats(const RouteStatsArgs& args);

}  // namespace micromoe::cli
