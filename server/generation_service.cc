#include "server/generation_service.h"

#include <random>

#include "base/str_cat.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"

namespace micromoe::server {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

GenerationService::GenerationService(const runtime::Model& model, Scheduler& scheduler,
                                     std::vector<experts::PlacedExpert> placement)
    : model_(model), scheduler_(scheduler), placement_(std::move(placement)) {}

grpc::Status GenerationService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (!request->options().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        StrCat("options: unknown option '", request->options().begin()->first, "'"));
  }
  const bool has_text = !request->prompt().empty(), has_ids = request->prompt_token_ids_size() > 0;
  if (has_text == has_ids) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        has_text ? "prompt: give either prompt or prompt_token_ids, not both"
                                 : "prompt: empty (give prompt text or prompt_token_ids)");
  }
  SequenceRequest req;
  const runtime::Tokenizer& tok = model_.tokenizer();
  if (request->chat()) {
    if (!has_text) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "chat: needs prompt text, not token ids");
    auto chat = runtime::EncodeChat(model_, {{"user", request->prompt()}});
    if (!chat.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, StrCat("chat: ", chat.status().message()));
    }
    req.prompt = std::move(*chat);
  } else if (has_text) {
    req.prompt = tok.Encode(request->prompt(), tok.add_bos(), false);
  } else {
    req.prompt.assign(request->prompt_token_ids().begin(), request->prompt_token_ids().end());
  }
  req.max_tokens = request->has_max_tokens() ? request->max_tokens() : 64;
  const v1::SamplingOptions& so = request->sampling();
  if (so.has_temperature()) req.sampling.temperature = so.temperature();
  if (so.has_top_k()) req.sampling.top_k = so.top_k();
  if (so.has_top_p()) req.sampling.top_p = so.top_p();
  req.sampling.seed = so.has_seed() ? so.seed() : std::random_device{}();
  const uint64_t seed = req.sampling.seed;
  const int prompt_tokens = static_cast<int>(req.prompt.size());

  auto seq_or = scheduler_.Submit(std::move(req));
  if (!seq_or.ok()) return ToGrpc(seq_or.status());
  std::shared_ptr<Sequence> seq = *seq_or;

  runtime::Utf8Stream text;
  for (;;) {
    const Sequence::Update u = seq->Next(std::chrono::milliseconds(50));
    if (context->IsCancelled()) {
      seq->Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
    if (!u.tokens.empty()) {
      v1::GenerateResponse r;
      v1::GenerateChunk* chunk = r.mutable_chunk();
      std::string bytes;
      for (int32_t id : u.tokens) {
        chunk->add_token_ids(id);
        bytes += tok.TokenToBytes(id);
      }
      chunk->set_text(text.Push(bytes));
      if (!writer->Write(r)) {  // the client went away
        seq->Cancel();
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading");
      }
    }
    if (u.done) break;
  }
  if (!seq->status().ok()) return ToGrpc(seq->status());
  v1::GenerateResponse r;
  v1::GenerateFinal* f = r.mutable_final();
  f->set_finish_reason(runtime::FinishReasonName(seq->finish()));
  f->set_prompt_tokens(prompt_tokens);
  f->set_completion_tokens(seq->completion_tokens());
  f->set_prefill_seconds(seq->prefill_seconds());
  f->set_decode_seconds(seq->decode_seconds());
  f->set_seed(seed);
  f->set_text_tail(text.Flush());
  for (const auto& [layer, expert] : seq->unavailable_experts()) {
    v1::ExpertRef* e = f->add_unavailable_experts();
    e->set_layer(layer);
    e->set_expert(expert);
  }
  writer->Write(r);
  return grpc::Status::OK;
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                         v1::TokenizeResponse* response) {
  const runtime::Tokenizer& tok = model_.tokenizer();
  const bool add_bos = request->has_add_bos() ? request->add_bos() : tok.add_bos();
  for (int32_t id : tok.Encode(request->text(), add_bos, request->parse_special())) {
    response->add_token_ids(id);
    response->add_pieces(std::string(tok.Piece(id)));
  }
  return grpc::Status::OK;
}

grpc::Status GenerationService::ModelInfo(grpc::ServerContext*, const v1::ModelInfoRequest*,
                                          v1::ModelInfoResponse* response) {
  const runtime::HParams& hp = model_.hparams();
  response->set_architecture(hp.arch);
  auto name = model_.file().GetString("general.name");
  if (name.ok()) response->set_name(std::string(name->data(), name->size()));
  response->set_n_vocab(hp.n_vocab);
  response->set_n_embd(hp.n_embd);
  response->set_n_layer(hp.n_layer);
  response->set_n_expert(hp.n_expert);
  response->set_n_expert_used(hp.n_expert_used);
  response->set_context_length(scheduler_.options().n_ctx);
  response->set_n_params(model_.n_params());
  response->set_max_sequences(scheduler_.options().max_sequences);
  response->set_bos_id(model_.tokenizer().bos_id());
  response->set_eos_id(model_.tokenizer().eos_id());
  for (const auto& p : placement_) {
    v1::ExpertPlacement* e = response->add_placement();
    e->set_layer(p.layer);
    e->set_expert(p.expert);
    for (const auto& ep : p.endpoints) e->add_endpoints(ep);
  }
  return grpc::Status::OK;
}

}  // namespace micromoe::server
