// The router node end to end: `micromoe serve` as a separate process on
// loopback, driven through the generated micromoe.v1 stubs.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "gguf/writer.h"
#include "micromoe.grpc.pb.h"
#include "runtime/generate.h"
#include "runtime/model.h"
#include "tests/child_process.h"
#include "tools/model_builder.h"

namespace micromoe {
namespace {

using namespace std::chrono_literals;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gguf::Writer w;
    tools::TinyModelSpec spec;
    spec.n_ctx = 16384;  // room for streams that outlast a test's other requests
    tools::BuildTinyModel(spec, &w);
    // One file per process: ctest runs tests in parallel, and rewriting a file
    // a server of another test has mapped would crash that server.
    model_path_ = ::testing::TempDir() + "/server_test_" + std::to_string(::getpid()) + ".gguf";
    ASSERT_TRUE(w.WriteFile(model_path_).ok());
  }
  std::unique_ptr<testing_support::ChildProcess> Start(int max_sequences = 16, int n_ctx = 256) {
    std::string error;
    auto server = testing_support::ChildProcess::Start(
        MICROMOE_BINARY,
        {"serve", "-m", model_path_, "--listen", "127.0.0.1:0", "-t", "2", "--max-sequences",
         std::to_string(max_sequences), "-c", std::to_string(n_ctx)},
        ::testing::TempDir() + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".log", &error);
    EXPECT_NE(server, nullptr) << error;
    return server;
  }
  static std::unique_ptr<v1::Generation::Stub> Stub(const std::string& address) {
    return v1::Generation::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }
  struct Streamed {
    grpc::Status status;
    std::string text;
    std::vector<int32_t> tokens;
    v1::GenerateFinal final;
  };
  static Streamed Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    auto reader = stub.Generate(&ctx, req);
    Streamed s;
    v1::GenerateResponse r;
    while (reader->Read(&r)) {
      if (r.has_chunk()) {
        s.text += r.chunk().text();
        s.tokens.insert(s.tokens.end(), r.chunk().token_ids().begin(), r.chunk().token_ids().end());
      }
      if (r.has_final()) s.final = r.final();
    }
    s.status = reader->Finish();
    s.text += s.final.text_tail();
    return s;
  }
  static v1::GenerateRequest Request(const std::string& prompt, int n, uint64_t seed, float temp = 0.8f) {
    v1::GenerateRequest req;
    req.set_prompt(prompt);
    req.set_max_tokens(n);
    req.mutable_sampling()->set_seed(seed);
    req.mutable_sampling()->set_temperature(temp);
    return req;
  }
  static inline std::string model_path_;
};

TEST_F(ServerTest, ClientGenerateMatchesLocalGenerateForTheSameSeed) {
  auto server = Start();
  auto run = [](const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
  };
  const std::string args = " -p 'the license of' -n 24 --seed 11 --temp 0.9 --top-k 20 --top-p 0.9";
  const std::string local = run(std::string(MICROMOE_BINARY) + " generate -m " + model_path_ + args + " 2>/dev/null");
  const std::string remote = run(std::string(MICROMOE_BINARY) + " client generate --server " + server->address() + args + " 2>/dev/null");
  EXPECT_FALSE(local.empty());
  EXPECT_EQ(local, remote);
}

TEST_F(ServerTest, SixteenConcurrentClientsGetTheirOwnCorrectStreams) {
  auto server = Start(16);
  auto model = runtime::Model::Load(model_path_);
  ASSERT_TRUE(model.ok());
  std::vector<std::thread> clients;
  std::vector<Streamed> results(16);
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&, i] {
      auto stub = Stub(server->address());
      results[i] = Generate(*stub, Request("the program " + std::to_string(i), 20, 100 + i));
    });
  }
  for (auto& t : clients) t.join();
  const auto& tok = (*model)->tokenizer();
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    runtime::GenerateOptions o;
    o.max_tokens = 20;
    o.sampling.seed = 100 + i;
    std::vector<int32_t> want;
    ASSERT_TRUE(runtime::Generate(**model, tok.Encode("the program " + std::to_string(i), tok.add_bos(), false), o,
                                  [&](int32_t t) { want.push_back(t); return true; }).ok());
    EXPECT_EQ(results[i].tokens, want) << "client " << i;
    EXPECT_EQ(results[i].final.completion_tokens(), static_cast<int>(want.size()));
  }
}

TEST_F(ServerTest, EveryBadFieldIsInvalidArgumentNamingIt) {
  auto server = Start();
  auto stub = Stub(server->address());
  auto expect_invalid = [&](const v1::GenerateRequest& req, const std::string& field) {
    const Streamed s = Generate(*stub, req);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(s.status.error_message().find(field), std::string::npos) << s.status.error_message();
  };
  expect_invalid(Request("", 4, 1), "prompt");
  v1::GenerateRequest both = Request("hi", 4, 1);
  both.add_prompt_token_ids(5);
  expect_invalid(both, "prompt");
  v1::GenerateRequest ids;
  ids.add_prompt_token_ids(1);
  ids.add_prompt_token_ids(999999);
  expect_invalid(ids, "prompt_token_ids[1]");
  expect_invalid(Request("hi", 100000, 1), "max_tokens");
  expect_invalid(Request("hi", 0, 1), "max_tokens");
  v1::GenerateRequest top_p = Request("hi", 4, 1);
  top_p.mutable_sampling()->set_top_p(1.5f);
  expect_invalid(top_p, "top_p");
  expect_invalid(Request("hi", 4, 1, -1.0f), "temperature");
  v1::GenerateRequest opt = Request("hi", 4, 1);
  (*opt.mutable_options())["beam_width"] = "4";
  expect_invalid(opt, "beam_width");
  v1::GenerateRequest chat = Request("hi", 4, 1);
  chat.set_chat(true);  // the test model has no chat template
  expect_invalid(chat, "chat");
}

TEST_F(ServerTest, SequencesBeyondTheCapGetResourceExhausted) {
  // Two long streams hold both slots; read one chunk of each so they are
  // running. They must still be running when the third request arrives on a
  // loaded machine: 200 sampled tokens took under 100 ms and once finished
  // first under ctest -j2, and sampled streams end at the end-of-sequence
  // token after 14-1329 tokens on this model. The greedy continuations of
  // these two prompts cycle without it (16000 tokens each with `micromoe
  // generate --temp 0`), so they last the whole test.
  auto server = Start(2, 16384);
  auto stub = Stub(server->address());
  grpc::ClientContext c1, c2;
  auto r1 = stub->Generate(&c1, Request("a", 16000, 1, 0.0f));
  auto r2 = stub->Generate(&c2, Request("for i in range", 16000, 2, 0.0f));
  v1::GenerateResponse r;
  ASSERT_TRUE(r1->Read(&r));
  ASSERT_TRUE(r2->Read(&r));
  const Streamed third = Generate(*stub, Request("the code", 4, 3));
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  c1.TryCancel();
  c2.TryCancel();
}

TEST_F(ServerTest, CancellingAStreamFreesItsSlotAtOnce) {
  auto server = Start(1);
  auto stub = Stub(server->address());
  {
    grpc::ClientContext ctx;
    auto reader = stub->Generate(&ctx, Request("the code", 200, 1));
    v1::GenerateResponse r;
    ASSERT_TRUE(reader->Read(&r));
    ctx.TryCancel();
    while (reader->Read(&r)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The only slot must be free again within a short time.
  grpc::Status last;
  for (int attempt = 0; attempt < 50; ++attempt) {
    last = Generate(*stub, Request("the code", 4, 2)).status;
    if (last.ok()) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(last.ok()) << last.error_message();
}

TEST_F(ServerTest, TokenizeAndModelInfo) {
  auto server = Start();
  auto stub = Stub(server->address());
  grpc::ClientContext c1;
  v1::TokenizeRequest treq;
  treq.set_text("the license");
  v1::TokenizeResponse tres;
  ASSERT_TRUE(stub->Tokenize(&c1, treq, &tres).ok());
  ASSERT_GE(tres.token_ids_size(), 2);
  EXPECT_EQ(tres.token_ids(0), 1);  // BOS
  grpc::ClientContext c2;
  v1::ModelInfoResponse info;
  ASSERT_TRUE(stub->ModelInfo(&c2, v1::ModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.architecture(), "llama");
  EXPECT_EQ(info.n_expert(), 4);
  EXPECT_EQ(info.max_sequences(), 16);
}

TEST_F(ServerTest, HealthServiceReportsServing) {
  auto server = Start();
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  grpc::Slice empty("");  // HealthCheckRequest{service: ""} is empty on the wire
  grpc::ByteBuffer request(&empty, 1), response;
  grpc::Status status;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status s) {
                      std::lock_guard<std::mutex> l(mu);
                      status = s;
                      done = true;
                      cv.notify_all();
                    });
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 15s, [&] { return done; }));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

TEST_F(ServerTest, SigtermEndsStreamsInFlightCleanlyAndExits) {
  auto server = Start();
  auto stub = Stub(server->address());
  Streamed result;
  std::thread client([&] { result = Generate(*stub, Request("the code", 200, 1)); });
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(server->Terminate(15000));
  client.join();
  // The stream either finished with its final message or was ended with a status; never hangs.
  if (result.status.ok()) {
    EXPECT_FALSE(result.final.finish_reason().empty());
  } else {
    EXPECT_NE(result.status.error_code(), grpc::StatusCode::OK);
  }
}

}  // namespace
}  // namespace micromoe
