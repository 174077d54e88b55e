#include "experts/placement.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/str_cat.h"
#include "experts/remote_expert.h"

namespace micromoe::experts {

namespace {

constexpr uint64_t kMaxPlacementBytes = 1 << 20;
constexpr size_t kMaxEndpointsPerEntry = 16;
constexpr size_t kMaxEndpointLength = 256;
constexpr int kMaxDeadlineMs = 10 * 60 * 1000;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

absl::StatusOr<int> ParseIndex(std::string_view s, std::string_view what) {
  int v = 0;
  if (s.empty() || s.size() > 9) {
    return absl::InvalidArgumentError(StrCat("bad ", what, " '", s, "': expected a number"));
  }
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    return absl::InvalidArgumentError(StrCat("bad ", what, " '", s, "': expected a number"));
  }
  return v;
}

// "N", "A-B" or "*" -> [first, last] within [0, count).
absl::StatusOr<std::pair<int, int>> ParseRange(std::string_view text, int count, std::string_view what) {
  const std::string_view s = Trim(text);
  if (s.empty()) return absl::InvalidArgumentError(StrCat("empty ", what, " range"));
  if (count <= 0) return absl::InvalidArgumentError(StrCat("the model has no ", what, "s"));
  if (s == "*") return std::pair<int, int>{0, count - 1};
  const size_t dash = s.find('-');
  int first, last;
  if (dash == std::string_view::npos) {
    auto v = ParseIndex(s, what);
    if (!v.ok()) return v.status();
    first = last = *v;
  } else {
    auto a = ParseIndex(Trim(s.substr(0, dash)), what);
    if (!a.ok()) return a.status();
    auto b = ParseIndex(Trim(s.substr(dash + 1)), what);
    if (!b.ok()) return b.status();
    first = *a;
    last = *b;
    if (first > last) {
      return absl::InvalidArgumentError(StrCat("bad ", what, " range '", s, "': ", first, " > ", last));
    }
  }
  if (last >= count) {
    return absl::InvalidArgumentError(
        StrCat(what, " range '", s, "' is outside the model (", what, "s 0-", count - 1, ")"));
  }
  return std::pair<int, int>{first, last};
}

// A JSON range field: a string as above, or a non-negative integer.
absl::StatusOr<std::pair<int, int>> RangeField(const nlohmann::json& v, int count, std::string_view what) {
  if (v.is_number_unsigned()) {
    const uint64_t n = v.get<uint64_t>();
    if (n >= static_cast<uint64_t>(std::max(count, 0))) {
      return absl::InvalidArgumentError(StrCat(what, " ", n, " is outside the model (", what, "s 0-", count - 1, ")"));
    }
    return std::pair<int, int>{static_cast<int>(n), static_cast<int>(n)};
  }
  if (v.is_string()) return ParseRange(v.get<std::string>(), count, what);
  return absl::InvalidArgumentError(StrCat("expected a ", what, " range string (\"N\", \"A-B\", \"*\") or index"));
}

absl::StatusOr<int> MillisField(const nlohmann::json& v, int min) {
  if (!v.is_number_integer()) return absl::InvalidArgumentError("expected an integer (milliseconds)");
  const int64_t ms = v.get<int64_t>();
  if (ms < min || ms > kMaxDeadlineMs) {
    return absl::InvalidArgumentError(StrCat(ms, " is outside ", min, "-", kMaxDeadlineMs));
  }
  return static_cast<int>(ms);
}

absl::Status EndpointCheck(const std::string& e) {
  if (e.empty()) return absl::InvalidArgumentError("empty endpoint");
  if (e.size() > kMaxEndpointLength) return absl::InvalidArgumentError("endpoint longer than 256 characters");
  for (unsigned char c : e) {
    if (c <= ' ' || c == 0x7F) return absl::InvalidArgumentError(StrCat("endpoint '", e, "' has a space or control character"));
  }
  if (e.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(StrCat("endpoint '", e, "' has no port (expected HOST:PORT)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::pair<int, int>>> ParseExpertSpec(std::string_view spec, int n_layer, int n_expert) {
  std::vector<std::pair<int, int>> out;
  const std::string_view all = Trim(spec);
  if (all.empty()) return absl::InvalidArgumentError("empty expert spec (expected LAYERS:EXPERTS, e.g. 0-7:0-3)");
  size_t begin = 0;
  while (begin <= all.size()) {
    size_t end = all.find(',', begin);
    if (end == std::string_view::npos) end = all.size();
    const std::string_view item = Trim(all.substr(begin, end - begin));
    const std::string where = StrCat("expert spec item '", item, "'");
    if (item.empty()) return absl::InvalidArgumentError(StrCat("expert spec '", all, "' has an empty item"));
    const size_t colon = item.find(':');
    if (colon == std::string_view::npos || item.find(':', colon + 1) != std::string_view::npos) {
      return absl::InvalidArgumentError(StrCat(where, ": expected LAYERS:EXPERTS, e.g. 0-7:0-3"));
    }
    auto layers = ParseRange(item.substr(0, colon), n_layer, "layer");
    if (!layers.ok()) return absl::InvalidArgumentError(StrCat(where, ": ", layers.status().message()));
    auto experts = ParseRange(item.substr(colon + 1), n_expert, "expert");
    if (!experts.ok()) return absl::InvalidArgumentError(StrCat(where, ": ", experts.status().message()));
    for (int l = layers->first; l <= layers->second; ++l) {
      for (int e = experts->first; e <= experts->second; ++e) out.emplace_back(l, e);
    }
    begin = end + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

absl::StatusOr<Placement> ParsePlacementFile(const std::string& path, int n_layer, int n_expert) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("cannot read placement file '", path, "'"));
  std::string text;
  text.resize(kMaxPlacementBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxPlacementBytes) {
    return absl::InvalidArgumentError(StrCat("placement file '", path, "' is larger than 1 MiB"));
  }
  auto fail = [&](const std::string& msg) { return absl::InvalidArgumentError(StrCat(path, ": ", msg)); };

  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return fail(StrCat("not valid JSON: ", e.what()));
  }
  if (!doc.is_object()) return fail("expected a JSON object with an \"experts\" array");

  Placement p;
  for (const auto& [key, value] : doc.items()) {
    if (key == "deadline_ms") {
      auto ms = MillisField(value, 1);
      if (!ms.ok()) return fail(StrCat("deadline_ms: ", ms.status().message()));
      p.options.deadline_ms = *ms;
    } else if (key == "retry_after_ms") {
      auto ms = MillisField(value, 0);
      if (!ms.ok()) return fail(StrCat("retry_after_ms: ", ms.status().message()));
      p.options.retry_after_ms = *ms;
    } else if (key != "experts") {
      return fail(StrCat("unknown key \"", key, "\" (expected deadline_ms, retry_after_ms, experts)"));
    }
  }
  const auto it = doc.find("experts");
  if (it == doc.end() || !it->is_array()) return fail("\"experts\" must be an array of entries");

  std::map<std::pair<int, int>, size_t> entry_of;  // (layer, expert) -> entry index
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& entry = (*it)[i];
    const std::string at = StrCat("experts[", i, "]");
    if (!entry.is_object()) return fail(StrCat(at, ": expected an object with layers, experts, endpoints"));
    for (const auto& [key, value] : entry.items()) {
      if (key != "layers" && key != "experts" && key != "endpoints") {
        return fail(StrCat(at, ": unknown key \"", key, "\" (expected layers, experts, endpoints)"));
      }
    }
    for (const char* field : {"layers", "experts", "endpoints"}) {
      if (!entry.contains(field)) return fail(StrCat(at, ".", field, ": missing"));
    }
    auto layers = RangeField(entry["layers"], n_layer, "layer");
    if (!layers.ok()) return fail(StrCat(at, ".layers: ", layers.status().message()));
    auto experts = RangeField(entry["experts"], n_expert, "expert");
    if (!experts.ok()) return fail(StrCat(at, ".experts: ", experts.status().message()));

    const nlohmann::json& eps = entry["endpoints"];
    if (!eps.is_array() || eps.empty()) return fail(StrCat(at, ".endpoints: expected a non-empty array of \"HOST:PORT\""));
    if (eps.size() > kMaxEndpointsPerEntry) {
      return fail(StrCat(at, ".endpoints: more than ", kMaxEndpointsPerEntry, " endpoints"));
    }
    std::vector<std::string> endpoints;
    for (size_t j = 0; j < eps.size(); ++j) {
      if (!eps[j].is_string()) return fail(StrCat(at, ".endpoints[", j, "]: expected a string \"HOST:PORT\""));
      std::string e = eps[j].get<std::string>();
      if (auto s = EndpointCheck(e); !s.ok()) return fail(StrCat(at, ".endpoints[", j, "]: ", s.message()));
      if (std::find(endpoints.begin(), endpoints.end(), e) != endpoints.end()) {
        return fail(StrCat(at, ".endpoints[", j, "]: '", e, "' is listed twice"));
      }
      endpoints.push_back(std::move(e));
    }
    for (int l = layers->first; l <= layers->second; ++l) {
      for (int e = experts->first; e <= experts->second; ++e) {
        const auto [prev, inserted] = entry_of.emplace(std::pair{l, e}, i);
        if (!inserted) {
          return fail(StrCat(at, ": layer ", l, " expert ", e, " is already placed by experts[", prev->second, "]"));
        }
        p.experts.push_back(PlacedExpert{l, e, endpoints});
      }
    }
  }
  return p;
}

namespace {

class RemoteExpertsImpl final : public RemoteExperts {
 public:
  const std::vector<Entry>& experts() const override { return entries_; }

  // Destroyed in reverse order: experts, then groups, then endpoints.
  std::map<std::string, std::shared_ptr<RemoteEndpoint>> endpoints_;
  std::vector<std::unique_ptr<RemoteGroup>> groups_;
  std::vector<std::unique_ptr<RemoteExpert>> impls_;
  std::vector<Entry> entries_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteExperts>> RemoteExperts::Connect(const Placement& placement, int64_t dim) {
  if (dim <= 0) return absl::InvalidArgumentError(StrCat("bad hidden size ", dim));
  if (placement.options.deadline_ms <= 0) {
    return absl::InvalidArgumentError(StrCat("deadline_ms must be positive, not ", placement.options.deadline_ms));
  }
  if (placement.options.retry_after_ms < 0) {
    return absl::InvalidArgumentError(StrCat("retry_after_ms must be >= 0, not ", placement.options.retry_after_ms));
  }
  auto impl = std::make_unique<RemoteExpertsImpl>();
  std::map<std::vector<std::string>, RemoteGroup*> group_of;
  std::set<std::pair<int, int>> seen;
  for (const PlacedExpert& pe : placement.experts) {
    if (pe.layer < 0 || pe.expert < 0) {
      return absl::InvalidArgumentError(StrCat("bad placed expert: layer ", pe.layer, " expert ", pe.expert));
    }
    if (!seen.insert({pe.layer, pe.expert}).second) {
      return absl::InvalidArgumentError(StrCat("layer ", pe.layer, " expert ", pe.expert, " is placed twice"));
    }
    if (pe.endpoints.empty()) {
      return absl::InvalidArgumentError(StrCat("layer ", pe.layer, " expert ", pe.expert, " has no endpoint"));
    }
    RemoteGroup*& group = group_of[pe.endpoints];
    if (group == nullptr) {
      std::vector<std::shared_ptr<RemoteEndpoint>> eps;
      for (const std::string& address : pe.endpoints) {
        if (auto s = EndpointCheck(address); !s.ok()) return s;
        std::shared_ptr<RemoteEndpoint>& ep = impl->endpoints_[address];
        if (!ep) ep = std::make_shared<RemoteEndpoint>(address, placement.options);
        eps.push_back(ep);
      }
      impl->groups_.push_back(std::make_unique<RemoteGroup>(std::move(eps), dim, placement.options));
      group = impl->groups_.back().get();
    }
    impl->impls_.push_back(std::make_unique<RemoteExpert>(group, pe.layer, pe.expert));
    impl->entries_.push_back(Entry{pe.layer, pe.expert, impl->impls_.back().get()});
  }
  return std::unique_ptr<RemoteExperts>(std::move(impl));
}

}  // namespace micromoe::experts
