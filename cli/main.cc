// micromoe: one binary, one subcommand per job. Results go to stdout; logs,
// progress and timings to stderr. Every failure prints a message and exits 1.
#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <tbb/global_control.h>

#include "base/str_cat.h"
#include "cli/bench.h"
#include "cli/client.h"
#include "cli/default_model.h"
#include "cli/quantize.h"
#include "cli/route_stats.h"
#include "server/serve.h"
#include "server/expert_node.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "kernels/packed.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"
#include "runtime/model.h"

namespace micromoe {
namespace {

using runtime::Model;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
  return 1;
}

double PeakRssMiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Escapes control characters so a piece prints on one line.
std::string EscapePiece(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

struct ThreadOption {
  int threads = 0;
  void Add(CLI::App* app) {
    app->add_option("-t,--threads", threads, "worker threads (default: all cores)")->check(CLI::Range(1, 1024));
  }
  std::unique_ptr<tbb::global_control> Apply() const {
    const int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, n);
  }
};

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path) {
  std::fprintf(stderr, "loading %s\n", path.c_str());
  return Model::Load(path);
}

int RunInspect(const std::string& path, bool cpu) {
  if (cpu) {
    const kernels::CpuFeatures& f = kernels::GetCpuFeatures();
    std::printf("cpu: %s\n", f.brand.c_str());
    std::printf("features: avx2=%d fma=%d f16c=%d avx512f=%d avx512bw=%d avx512vl=%d avx512vnni=%d avx512bf16=%d amx_tile=%d amx_int8=%d amx_bf16=%d\n",
                f.avx2, f.fma, f.f16c, f.avx512f, f.avx512bw, f.avx512vl, f.avx512vnni, f.avx512bf16,
                f.amx_tile, f.amx_int8, f.amx_bf16);
    std::printf("kernels: %s\n", kernels::Active().name);
    // Matrices of these types are repacked at load when the kernels compute with the packed layout.
    std::string packed;
    using gguf::TensorType;
    for (TensorType t : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ5_0, TensorType::kIQ4_NL, TensorType::kQ4_K,
                         TensorType::kQ5_K, TensorType::kQ6_K, TensorType::kQ3_K, TensorType::kQ2_K, TensorType::kIQ4_XS,
                         TensorType::kBF16, TensorType::kF16}) {
      if (kernels::CanPack(t)) packed += StrCat(packed.empty() ? "" : " ", gguf::TypeName(t));
    }
    std::printf("repacked at load: %s\n", packed.empty() ? "none" : packed.c_str());
    if (path.empty()) return 0;
  }
  auto model = Model::Load(path);
  if (!model.ok()) return Fail(model.status());
  const Model& m = **model;
  const runtime::HParams& hp = m.hparams();
  const gguf::File& f = m.file();
  std::printf("file: %s (GGUF v%u, %llu bytes, %zu tensors, %zu metadata keys)\n", path.c_str(), f.version(),
              static_cast<unsigned long long>(f.size()), f.tensors().size(), f.metadata().size());
  std::printf("architecture: %s\n", hp.arch.c_str());
  std::printf("parameters: %llu\n", static_cast<unsigned long long>(m.n_params()));
  std::printf("vocab: %d\nembedding: %d\nlayers: %d\nheads: %d (kv %d, head dim %d)\n", hp.n_vocab, hp.n_embd,
              hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim);
  std::printf("ffn: %d\ncontext (trained): %d\nrope: dim %d, base %g, %s\nrms eps: %g\n", hp.n_ff, hp.n_ctx_train,
              hp.rope_dim, hp.rope_base, hp.rope_style == runtime::RopeStyle::kNormal ? "normal" : "neox", hp.rms_eps);
  if (hp.n_expert > 0) {
    std::printf("experts: %d, used per token: %d, gating: %s%s\n", hp.n_expert, hp.n_expert_used,
                "softmax", hp.gating.renormalize ? " + top-k renormalised" : "");
    if (hp.n_ff_shared > 0) std::printf("shared expert: ffn %d, sigmoid gate\n", hp.n_ff_shared);
  } else {
    std::printf("experts: none (dense FFN)\n");
  }
  if (m.has_tokenizer()) {
    std::printf("tokenizer: bos %d, eos %d, add bos %s\n", m.tokenizer().bos_id(), m.tokenizer().eos_id(),
                m.tokenizer().add_bos() ? "yes" : "no");
  }
  std::printf("\n%-36s %-6s %-24s %12s\n", "tensor", "type", "shape", "bytes");
  for (const auto& t : f.tensors()) {
    std::string shape;
    for (uint32_t d = 0; d < t.n_dims; ++d) shape += StrCat(d ? " x " : "", t.ne[d]);
    std::printf("%-36s %-6s %-24s %12llu\n", t.name.c_str(), std::string(gguf::TypeName(t.type)).c_str(),
                shape.c_str(), static_cast<unsigned long long>(t.n_bytes));
  }
  return 0;
}

int RunTokenize(const std::string& path, const std::string& text, bool ids_only, bool no_bos, bool special) {
  auto model = LoadModel(path);
  if (!model.ok()) return Fail(model.status());
  const runtime::Tokenizer& tok = (*model)->tokenizer();
  const std::vector<int32_t> ids = tok.Encode(text, tok.add_bos() && !no_bos, special);
  if (ids_only) {
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); ++i) out += StrCat(i ? ", " : "", ids[i]);
    std::printf("%s]\n", out.c_str());
  } else {
    for (int32_t id : ids) std::printf("%d\t%s\n", id, EscapePiece(tok.Piece(id)).c_str());
  }
  return 0;
}

struct GenerateArgs {
  std::string model, prompt;
  int n = 64;
  int n_ctx = 0;
  runtime::SamplingOptions sampling;
  bool seed_given = false;
  bool chat = false;
};

int RunGenerate(const GenerateArgs& a) {
  auto model = LoadModel(a.model);
  if (!model.ok()) return Fail(model.status());
  const Model& m = **model;
  runtime::GenerateOptions opts;
  opts.max_tokens = a.n;
  opts.n_ctx = a.n_ctx;
  opts.sampling = a.sampling;
  if (!a.seed_given) opts.sampling.seed = std::random_device{}();
  if (a.prompt.empty()) return Fail(absl::InvalidArgumentError("the prompt (-p) is empty"));
  std::vector<int32_t> prompt;
  if (a.chat) {
    auto chat = runtime::EncodeChat(m, {{"user", a.prompt}});
    if (!chat.ok()) return Fail(chat.status());
    prompt = std::move(*chat);
  } else {
    prompt = m.tokenizer().Encode(a.prompt, m.tokenizer().add_bos(), false);
  }
  if (prompt.empty()) return Fail(absl::InvalidArgumentError("the prompt has no tokens"));
  runtime::Utf8Stream stream;
  auto result = runtime::Generate(m, prompt, opts, [&](int32_t id) {
    std::fputs(stream.Push(m.tokenizer().TokenToBytes(id)).c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  if (!result.ok()) return Fail(result.status());
  std::printf("%s\n", stream.Flush().c_str());
  const auto& r = *result;
  std::fprintf(stderr, "prompt: %zu tokens in %.3f s (%.1f t/s); generated: %zu tokens in %.3f s (%.1f t/s); finish: %s; seed %llu\n",
               prompt.size(), r.prefill_seconds, prompt.size() / std::max(r.prefill_seconds, 1e-9), r.tokens.size(),
               r.decode_seconds, r.tokens.size() / std::max(r.decode_seconds, 1e-9), runtime::FinishReasonName(r.finish),
               static_cast<unsigned long long>(opts.sampling.seed));
  std::fprintf(stderr, "peak resident memory: %.1f MiB (model file %.1f MiB)\n", PeakRssMiB(), m.file().size() / 1048576.0);
  return 0;
}

// An interactive conversation on stdin/stdout; the history is re-sent each turn.
int RunChat(const std::string& path, const GenerateArgs& a) {
  auto model = LoadModel(path);
  if (!model.ok()) return Fail(model.status());
  const Model& m = **model;
  std::vector<runtime::ChatMessage> history;
  runtime::SamplingOptions sampling = a.sampling;
  if (!a.seed_given) sampling.seed = std::random_device{}();
  std::fprintf(stderr, "chat: one message a line; end with Ctrl-D\n");
  std::string line;
  while (std::fprintf(stderr, "> "), std::getline(std::cin, line)) {
    if (line.empty()) continue;
    history.push_back({"user", line});
    auto prompt = runtime::EncodeChat(m, history);
    if (!prompt.ok()) return Fail(prompt.status());
    runtime::GenerateOptions opts;
    opts.max_tokens = a.n;
    opts.sampling = sampling;
    ++opts.sampling.seed;  // a different draw each turn, reproducible for a seed
    sampling.seed = opts.sampling.seed;
    runtime::Utf8Stream stream;
    std::string reply;
    auto r = runtime::Generate(m, *prompt, opts, [&](int32_t id) {
      const std::string text = stream.Push(m.tokenizer().TokenToBytes(id));
      reply += text;
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
      return true;
    });
    if (!r.ok()) return Fail(r.status());
    reply += stream.Flush();
    std::printf("\n");
    history.push_back({"assistant", reply});
  }
  return 0;
}

int RunPerplexity(const std::string& path, const std::string& text_file, int n_ctx) {
  auto model = LoadModel(path);
  if (!model.ok()) return Fail(model.status());
  std::ifstream in(text_file, std::ios::binary);
  if (!in) return Fail(absl::NotFoundError(StrCat("cannot read text file '", text_file, "'")));
  std::stringstream ss;
  ss << in.rdbuf();
  const runtime::Tokenizer& tok = (*model)->tokenizer();
  const std::vector<int32_t> tokens = tok.Encode(ss.str(), tok.add_bos(), false);
  std::fprintf(stderr, "%zu tokens, %zu chunks of %d\n", tokens.size(), tokens.size() / std::max(n_ctx, 1), n_ctx);
  auto r = runtime::Perplexity(**model, tokens, n_ctx, [](int chunk, double ppl) {
    std::fprintf(stderr, "[%d]%.4f ", chunk + 1, ppl);
  });
  std::fprintf(stderr, "\n");
  if (!r.ok()) return Fail(r.status());
  std::printf("chunks: %d, scored tokens: %llu\n", r->n_chunks, static_cast<unsigned long long>(r->n_scored));
  std::printf("Final estimate: PPL = %.4f +/- %.4f\n", r->ppl, r->ppl_stderr);
  return 0;
}

}  // namespace
}  // namespace micromoe

int main(int argc, char** argv) {
  using namespace micromoe;
  const std::string kModelHelp = StrCat("GGUF model file (default: ", cli::kDefaultModelFile, ", see the README)");
  CLI::App app{"micromoe: Mixture-of-Experts inference on CPUs and edge clusters"};
  app.require_subcommand(1);

  std::string model_path, inspect_path;
  bool inspect_cpu = false;
  CLI::App* inspect = app.add_subcommand("inspect", "validate a GGUF model and print its architecture and tensors");
  inspect->add_option("model", inspect_path, kModelHelp);
  inspect->add_flag("--cpu", inspect_cpu, "print the CPU features and the kernels chosen");

  std::string text;
  bool ids_only = false, no_bos = false, special = false;
  CLI::App* tokenize = app.add_subcommand("tokenize", "print the tokens of a text");
  tokenize->add_option("-m,--model", model_path, kModelHelp);
  tokenize->add_option("-p,--prompt", text, "text to tokenize")->required();
  tokenize->add_flag("--ids", ids_only, "print only the ids, as one JSON array");
  tokenize->add_flag("--no-bos", no_bos, "do not add BOS");
  tokenize->add_flag("--special", special, "parse special-token text as special tokens");

  GenerateArgs gen;
  ThreadOption gen_threads;
  CLI::App* generate = app.add_subcommand("generate", "continue a prompt");
  generate->add_option("-m,--model", gen.model, kModelHelp);
  generate->add_option("-p,--prompt", gen.prompt, "prompt text")->required();
  generate->add_option("-n,--n-predict", gen.n, "tokens to generate (default 64)")->check(CLI::Range(0, 1 << 20));
  generate->add_option("-c,--ctx-size", gen.n_ctx, "context size (default: prompt + n, at most the model's)")->check(CLI::Range(0, 1 << 20));
  generate->add_option("--temp", gen.sampling.temperature, "temperature (0: greedy; default 0.8)");
  generate->add_option("--top-k", gen.sampling.top_k, "keep the k most likely tokens (0: all; default 40)");
  generate->add_option("--top-p", gen.sampling.top_p, "nucleus probability mass (default 0.95)");
  auto* seed = generate->add_option("--seed", gen.sampling.seed, "random seed (default: random)");
  generate->add_flag("--chat", gen.chat, "wrap the prompt as a user turn in the model's chat template");
  gen_threads.Add(generate);

  GenerateArgs chat_args;
  std::string chat_model;
  CLI::App* chat = app.add_subcommand("chat", "an interactive conversation in the model's chat template");
  chat->add_option("-m,--model", chat_model, kModelHelp);
  chat->add_option("-n,--n-predict", chat_args.n, "tokens per reply at most (default 64)");
  chat->add_option("--temp", chat_args.sampling.temperature, "temperature (0: greedy; default 0.8)");
  chat->add_option("--top-k", chat_args.sampling.top_k, "top-k (default 40)");
  chat->add_option("--top-p", chat_args.sampling.top_p, "top-p (default 0.95)");
  auto* chat_seed = chat->add_option("--seed", chat_args.sampling.seed, "random seed (default: random)");
  ThreadOption chat_threads;
  chat_threads.Add(chat);

  std::string text_file;
  int ppl_ctx = 512;
  ThreadOption ppl_threads;
  CLI::App* perplexity = app.add_subcommand("perplexity", "perplexity of a text file");
  perplexity->add_option("-m,--model", model_path, kModelHelp);
  perplexity->add_option("-f,--file", text_file, "text file")->required();
  perplexity->add_option("-c,--ctx-size", ppl_ctx, "tokens per chunk (default 512)")->check(CLI::Range(4, 1 << 20));
  ppl_threads.Add(perplexity);

  server::ServeArgs serve_args;
  CLI::App* serve = app.add_subcommand("serve", "run a router node: gRPC micromoe.v1.Generation over continuous batching");
  serve->add_option("-m,--model", serve_args.model, kModelHelp);
  serve->add_option("--listen", serve_args.listen, "address to listen on (default 127.0.0.1:50051; port 0 picks one)");
  serve->add_option("--placement", serve_args.placement, "JSON file placing experts on expert nodes (default: all local)");
  serve->add_option("-t,--threads", serve_args.threads, "worker threads (default: all cores)")->check(CLI::Range(1, 1024));
  serve->add_option("--max-sequences", serve_args.max_sequences, "concurrent sequences; more get RESOURCE_EXHAUSTED (default 8)");
  serve->add_option("-c,--ctx-size", serve_args.n_ctx, "positions per sequence (default 2048, at most the model's)")->check(CLI::Range(16, 1 << 20));
  serve->add_option("--on-expert-failure", serve_args.on_expert_failure, "fail | degrade (default fail)");

  cli::ClientGenerateArgs client_args;
  CLI::App* client = app.add_subcommand("client", "talk to a router node");
  client->require_subcommand(1);
  CLI::App* client_generate = client->add_subcommand("generate", "stream a continuation from the server");
  client_generate->add_option("--server", client_args.server, "router address (default 127.0.0.1:50051)");
  client_generate->add_option("-p,--prompt", client_args.prompt, "prompt text")->required();
  client_generate->add_option("-n,--n-predict", client_args.n, "tokens to generate (default 64)");
  client_generate->add_option("--temp", client_args.temperature, "temperature (0: greedy)");
  client_generate->add_option("--top-k", client_args.top_k, "top-k");
  client_generate->add_option("--top-p", client_args.top_p, "top-p");
  client_generate->add_option("--seed", client_args.seed, "random seed");
  client_generate->add_option("--timeout", client_args.timeout_s, "seconds before giving up (default 600)");
  client_generate->add_flag("--chat", client_args.chat, "wrap the prompt as a user turn in the model's chat template");
  std::string info_server = "127.0.0.1:50051";
  CLI::App* client_info = client->add_subcommand("info", "print the server's model information");
  client_info->add_option("--server", info_server, "router address (default 127.0.0.1:50051)");

  cli::BenchArgs bench_args;
  CLI::App* bench = app.add_subcommand("bench", "prompt and generation tokens/s, with the memory-bandwidth bound");
  bench->add_option("-m,--model", bench_args.model, kModelHelp);
  bench->add_option("-p,--n-prompt", bench_args.n_prompt, "prompt tokens (default 128)");
  bench->add_option("-n,--n-gen", bench_args.n_gen, "generated tokens (default 64)");
  bench->add_option("-d,--depth", bench_args.depth, "tokens of context already in the KV cache (default 0)")
      ->check(CLI::Range(0, 1 << 20));
  bench->add_option("-t,--threads", bench_args.threads, "thread counts, comma separated (default 1,2)")->delimiter(',');
  bench->add_option("-r,--repetitions", bench_args.repetitions, "repetitions (default 3)");
  bench->add_flag("--json", bench_args.json, "print the rows as a JSON array");
  bench->add_flag("!--no-repack", bench_args.repack, "compute from the file's layout, without repacking weights");

  server::ExpertNodeArgs node_args;
  CLI::App* expert_node = app.add_subcommand("expert-node", "serve some of a model's experts to router nodes (micromoe.v1.ExpertHost)");
  expert_node->add_option("-m,--model", node_args.model, kModelHelp);
  expert_node->add_option("--experts", node_args.experts_spec, "experts to serve: LAYERS:EXPERTS[,...], e.g. 0-7:0-3 or *:0-3")->required();
  expert_node->add_option("--listen", node_args.listen, "address to listen on (default 127.0.0.1:50061; port 0 picks one)");
  expert_node->add_option("-t,--threads", node_args.threads, "worker threads (default: all cores)")->check(CLI::Range(1, 1024));

  cli::QuantizeArgs quantize_args;
  CLI::App* quantize = app.add_subcommand("quantize", "rewrite a model with its matrices in another weight type");
  quantize->add_option("input", quantize_args.input, "input GGUF model")->required();
  quantize->add_option("output", quantize_args.output, "output GGUF file")->required();
  quantize->add_option("type", quantize_args.type,
                       "f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q4_k | q5_k | q6_k. A tensor whose rows "
                       "the type's blocks do not divide (256 values for the K-quants, 32 for the others) is written "
                       "as llama.cpp's quantizer writes it: q4_k as q5_0, q5_k as q5_1, q6_k as q8_0 when its rows "
                       "are a multiple of 32, else as f16")
      ->required();
  quantize->add_option("--experts-type", quantize_args.experts_type, "type of the stacked expert tensors (default: TYPE), e.g. "
                       "q6_k --experts-type q4_k for a Q4_K_M-like mix");
  quantize->add_flag("--keep-router-f32", quantize_args.keep_router_f32, "keep the router (gate) tensors in F32");

  cli::RouteStatsArgs route_args;
  ThreadOption route_threads;
  CLI::App* route = app.add_subcommand("route-stats", "per layer, the share of tokens each expert gets and the routing entropy");
  route->add_option("-m,--model", route_args.model, kModelHelp);
  route->add_option("-f,--file", route_args.text_file, "text file")->required();
  route->add_option("-c,--ctx-size", route_args.n_ctx, "tokens per chunk (default 128)");
  route->add_option("--svg", route_args.svg, "write a layers x experts heat-map here");
  route_threads.Add(route);

  CLI11_PARSE(app, argc, argv);
  // Commands that take a model fall back to the default one (cli/default_model.h).
  for (auto [command, path] : {std::pair{tokenize, &model_path}, {generate, &gen.model}, {perplexity, &model_path},
                               {serve, &serve_args.model}, {bench, &bench_args.model}, {expert_node, &node_args.model},
                               {route, &route_args.model}, {inspect, &inspect_path}, {chat, &chat_model}}) {
    if (!*command || (command == inspect && inspect_cpu)) continue;
    auto resolved = cli::ModelOrDefault(*path);
    if (!resolved.ok()) return Fail(resolved.status());
    *path = *resolved;
  }
  if (*chat) {
    chat_args.seed_given = chat_seed->count() > 0;
    auto control = chat_threads.Apply();
    return RunChat(chat_model, chat_args);
  }
  if (*route) {
    auto control = route_threads.Apply();
    return cli::RunRouteStats(route_args);
  }
  if (*quantize) return cli::RunQuantize(quantize_args);
  if (*expert_node) return server::RunExpertNode(node_args);
  if (*bench) return cli::RunBench(bench_args);
  if (*serve) return server::RunServe(serve_args);
  if (*client_generate) return cli::RunClientGenerate(client_args);
  if (*client_info) return cli::RunClientInfo(info_server, 30);

  if (*inspect) return RunInspect(inspect_path, inspect_cpu);
  if (*tokenize) return RunTokenize(model_path, text, ids_only, no_bos, special);
  if (*generate) {
    gen.seed_given = seed->count() > 0;
    auto control = gen_threads.Apply();
    return RunGenerate(gen);
  }
  if (*perplexity) {
    auto control = ppl_threads.Apply();
    return RunPerplexity(model_path, text_file, ppl_ctx);
  }
  return 1;
}
