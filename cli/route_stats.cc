#include "cli/route_stats.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "base/str_cat.h"
#include "runtime/forward.h"
#include "runtime/model.h"

namespace micromoe::cli {
namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

// share[layer][expert] as a heat-map: white (0) to dark blue (the largest share).
std::string HeatMapSvg(const std::vector<std::vector<double>>& share, const std::string& title) {
  const int cell = 36, left = 70, top = 50;
  const int n_layer = static_cast<int>(share.size()), n_expert = static_cast<int>(share[0].size());
  double mx = 0;
  for (const auto& row : share) {
    for (double v : row) mx = std::max(mx, v);
  }
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + n_expert * cell + 20 << "\" height=\""
      << top + n_layer * cell + 20 << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  svg << "<text x=\"" << left << "\" y=\"18\" font-size=\"13\">" << title << "</text>\n";
  for (int e = 0; e < n_expert; ++e) {
    svg << "<text x=\"" << left + e * cell + cell / 2 << "\" y=\"" << top - 8 << "\" text-anchor=\"middle\">e" << e << "</text>\n";
  }
  for (int l = 0; l < n_layer; ++l) {
    svg << "<text x=\"" << left - 8 << "\" y=\"" << top + l * cell + cell / 2 + 4 << "\" text-anchor=\"end\">layer " << l << "</text>\n";
    for (int e = 0; e < n_expert; ++e) {
      const double t = mx > 0 ? share[l][e] / mx : 0;
      const int r = static_cast<int>(255 - t * 225), g = static_cast<int>(255 - t * 175), b = static_cast<int>(255 - t * 55);
      svg << "<rect x=\"" << left + e * cell << "\" y=\"" << top + l * cell << "\" width=\"" << cell - 2 << "\" height=\""
          << cell - 2 << "\" fill=\"rgb(" << r << "," << g << "," << b << ")\"><title>layer " << l << " expert " << e
          << ": " << share[l][e] * 100 << "%</title></rect>\n";
      char pct[16];
      std::snprintf(pct, sizeof pct, "%.0f", share[l][e] * 100);
      svg << "<text x=\"" << left + e * cell + cell / 2 - 1 << "\" y=\"" << top + l * cell + cell / 2 + 3
          << "\" text-anchor=\"middle\" fill=\"" << (t > 0.6 ? "white" : "black") << "\">" << pct << "</text>\n";
    }
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace

int RunRouteStats(const RouteStatsArgs& a) {
  auto loaded = runtime::Model::Load(a.model);
  if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
  const runtime::Model& m = **loaded;
  const runtime::HParams& hp = m.hparams();
  if (hp.n_expert == 0) return Fail("the model has no experts (dense FFN): nothing to route");
  std::ifstream in(a.text_file, std::ios::binary);
  if (!in) return Fail(StrCat("cannot read text file '", a.text_file, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<int32_t> tokens = m.tokenizer().Encode(ss.str(), m.tokenizer().add_bos(), false);
  if (a.n_ctx < 2 || a.n_ctx > hp.n_ctx_train) return Fail(StrCat("-c must be between 2 and ", hp.n_ctx_train));
  if (tokens.size() < 2) return Fail("the text has fewer than 2 tokens");

  std::vector<std::vector<uint64_t>> before(hp.n_layer);
  for (int l = 0; l < hp.n_layer; ++l) before[l] = m.layers()[l].router->Load();
  runtime::KvCache kv(hp.n_layer, hp.n_head_kv, hp.head_dim, a.n_ctx, 1);
  std::vector<float> logits;
  for (size_t start = 0; start < tokens.size(); start += a.n_ctx) {
    const size_t n = std::min<size_t>(a.n_ctx, tokens.size() - start);
    if (auto s = kv.Start(0); !s.ok()) return Fail(std::string(s.message()));
    std::vector<runtime::BatchRow> rows(n);
    for (size_t i = 0; i < n; ++i) rows[i] = {tokens[start + i], static_cast<int32_t>(i), 0, false};
    if (auto s = runtime::Forward(m, rows, kv, &logits); !s.ok()) return Fail(std::string(s.message()));
  }

  std::vector<std::vector<double>> share(hp.n_layer, std::vector<double>(hp.n_expert));
  std::printf("%zu tokens, top-%d of %d experts; share of routing slots per expert (%%), entropy in bits (max %.2f)\n",
              tokens.size(), hp.n_expert_used, hp.n_expert, std::log2(hp.n_expert));
  std::printf("%-6s", "layer");
  for (int e = 0; e < hp.n_expert; ++e) std::printf(" %6s", StrCat("e", e).c_str());
  std::printf(" %8s\n", "entropy");
  for (int l = 0; l < hp.n_layer; ++l) {
    const std::vector<uint64_t> after = m.layers()[l].router->Load();
    uint64_t total = 0;
    for (int e = 0; e < hp.n_expert; ++e) total += after[e] - before[l][e];
    double entropy = 0;
    std::printf("%-6d", l);
    for (int e = 0; e < hp.n_expert; ++e) {
      const double p = total ? static_cast<double>(after[e] - before[l][e]) / total : 0;
      share[l][e] = p;
      if (p > 0) entropy -= p * std::log2(p);
      std::printf(" %6.1f", 100 * p);
    }
    std::printf(" %8.3f\n", entropy);
  }
  if (!a.svg.empty()) {
    std::ofstream out(a.svg);
    out << HeatMapSvg(share, StrCat("routing of ", a.text_file));
    if (!out) return Fail(StrCat("cannot write '", a.svg, "'"));
    std::fprintf(stderr, "wrote %s\n", a.svg.c_str());
  }
  return 0;
}

}  // namespace micromoe::cli
