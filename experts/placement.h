// Where experts live: parsing of placement files and expert specs, and the
// remote experts a router installs in place of local ones.
//
// Placement file (JSON):
//   {
//     "deadline_ms": 2000,          // per remote call (optional)
//     "retry_after_ms": 1000,       // a failed endpoint is skipped this long (optional)
//     "experts": [
//       {"layers": "0-7", "experts": "0-3", "endpoints": ["127.0.0.1:50061", "127.0.0.1:50071"]},
//       {"layers": "0-7", "experts": "4-5", "endpoints": ["127.0.0.1:50062"]}
//     ]
//   }
// The first endpoint of an entry is the primary, the rest are replicas tried
// in order. Experts not listed stay local.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "experts/expert.h"

namespace micromoe::experts {

struct PlacedExpert {
  int layer = 0;
  int expert = 0;
  std::vector<std::string> endpoints;  // primary first
};

struct PlacementOptions {
  int deadline_ms = 2000;
  int retry_after_ms = 1000;
};

struct Placement {
  PlacementOptions options;
  std::vector<PlacedExpert> experts;
};

// Parses and checks a placement file against the model's shape (ranges in
// bounds, no expert placed twice, at least one endpoint per entry).
absl::StatusOr<Placement> ParsePlacementFile(const std::string& path, int n_layer, int n_expert);

// Parses "LAYERS:EXPERTS[,LAYERS:EXPERTS...]" where each side is "N", "A-B" or "*";
// e.g. "0-7:0-3". Returns (layer, expert) pairs, sorted, without duplicates.
absl::StatusOr<std::vector<std::pair<int, int>>> ParseExpertSpec(std::string_view spec, int n_layer,
                                                                  int n_expert);

// The remote side of a placement: one ExpertGroup per distinct endpoint list,
// one Expert per placed (layer, expert). Thread-safe; owns its gRPC channels.
class RemoteExperts {
 public:
  static absl::StatusOr<std::unique_ptr<RemoteExperts>> Connect(const Placement& placement, int64_t dim);
  virtual ~RemoteExperts() = default;

  struct Entry {
    int layer;
    int expert;
    const Expert* impl;
  };
  virtual const std::vector<Entry>& experts() const = 0;
};

}  // namespace micromoe::experts
