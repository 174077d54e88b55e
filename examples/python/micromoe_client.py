#!/usr/bin/python3
"""Streams a completion from a micromoe router node over gRPC (micromoe.v1).

A model for gRPC clients in any language: generate stubs from
proto/micromoe.proto, open a channel, call Generation.Generate and read the
stream of chunks and the final message.

Needs Debian's python3-grpcio and python3-protobuf, and protoc with
grpc_python_plugin (protobuf-compiler-grpc) to generate the stubs, which this
script does on first use into a cache folder. Run it with /usr/bin/python3.

    /usr/bin/python3 examples/python/micromoe_client.py --server 127.0.0.1:50051 \
        -p "The license" -n 32 --temp 0
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


def load_stubs(cache_dir):
    """Generates (once) and imports micromoe_pb2 and micromoe_pb2_grpc."""
    proto = os.path.join(PROTO_DIR, "micromoe.proto")
    stamp = os.path.join(cache_dir, "micromoe_pb2_grpc.py")
    if not os.path.exists(stamp) or os.path.getmtime(stamp) < os.path.getmtime(proto):
        os.makedirs(cache_dir, exist_ok=True)
        plugin = "/usr/bin/grpc_python_plugin"
        subprocess.run(["protoc", "-I", PROTO_DIR, "--python_out=" + cache_dir,
                        "--grpc_python_out=" + cache_dir,
                        "--plugin=protoc-gen-grpc_python=" + plugin, proto], check=True)
    sys.path.insert(0, cache_dir)
    import micromoe_pb2  # noqa: E402
    import micromoe_pb2_grpc  # noqa: E402
    return micromoe_pb2, micromoe_pb2_grpc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("-p", "--prompt", required=True)
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--temp", type=float)
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--top-p", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--stub-cache", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "micromoe", "python-stubs"))
    args = ap.parse_args()

    import grpc
    pb, pb_grpc = load_stubs(args.stub_cache)
    sampling = pb.SamplingOptions()
    if args.temp is not None:
        sampling.temperature = args.temp
    if args.top_k is not None:
        sampling.top_k = args.top_k
    if args.top_p is not None:
        sampling.top_p = args.top_p
    if args.seed is not None:
        sampling.seed = args.seed
    request = pb.GenerateRequest(prompt=args.prompt, max_tokens=args.max_tokens, sampling=sampling)

    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.GenerationStub(channel)
        try:
            for response in stub.Generate(request, timeout=args.timeout):
                kind = response.WhichOneof("kind")
                if kind == "chunk":
                    sys.stdout.buffer.write(response.chunk.text.encode("utf-8"))
                    sys.stdout.flush()
                elif kind == "final":
                    final = response.final
                    sys.stdout.buffer.write((final.text_tail + "\n").encode("utf-8"))
                    sys.stdout.flush()
                    print("generated %d tokens, finish: %s, seed %d" %
                          (final.completion_tokens, final.finish_reason, final.seed), file=sys.stderr)
                    for e in final.unavailable_experts:
                        print("warning: expert %d of layer %d was unavailable" % (e.expert, e.layer),
                              file=sys.stderr)
        except grpc.RpcError as e:
            print("error: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
