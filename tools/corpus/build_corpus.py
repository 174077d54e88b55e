#!/usr/bin/python3
"""Builds the training corpus of the embedded default model from files Debian installs.

Three domains, each from text already on a Debian 12 system (no network):
  prose  - /usr/share/common-licenses/*, /usr/share/doc/*/copyright and the
           README*/NEWS*/*.txt/*.md/changelog* files under /usr/share/doc
           (.gz files are uncompressed);
  c      - C headers (*.h) under /usr/include, skipping C++ headers (c++/,
           absl/, eigen3/, ... and any header that uses namespace/template/class);
  python - the Python 3.11 standard library (/usr/lib/python3.11/**/*.py,
           without test/, tests/, idle_test/, site-packages/, dist-packages/).

Determinism: candidate paths are listed, sorted, then put in the order of the
SHA-1 of their path (which spreads the sample over packages instead of taking
the alphabetically first ones); exact-duplicate file contents are dropped;
every file is cut to at most PER_FILE_CAP bytes at a line boundary; files are
taken in that order until the domain's train cap. Every 20th accepted file
(index % 20 == 10) goes to held-out text instead of train, until the held-out
cap; held-out files beyond that cap are dropped (never trained on).

Writes build/corpus/{prose,c,python}.{train,heldout}.txt and
build/corpus/manifest.tsv (domain, split, bytes, sha256, path) under the
repository root. Files are joined with one blank line.

Usage: /usr/bin/python3 tools/corpus/build_corpus.py [--out build/corpus]
"""
import argparse
import glob
import gzip
import hashlib
import os
import sys

TRAIN_CAP = {"prose": 8_000_000, "c": 8_000_000, "python": 8_000_000}
HELDOUT_CAP = 150_000
PER_FILE_CAP = 48_000
CHANGELOG_SHARE = 0.25  # at most this share of prose train bytes from changelogs

CXX_DIRS = ("c++/", "absl/", "eigen3/", "grpc++/", "grpcpp/", "google/", "tbb/", "oneapi/",
            "gtest/", "gmock/", "benchmark/", "CLI/", "nlohmann/", "boost/", "unicode/",
            "qt", "llvm", "clang", "sigc++", "glibmm", "gtkmm", "KF5", "opencv")


def read_text(path):
    """The file's text (gunzipped for .gz), or None if unreadable or not UTF-8 text."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(4_000_000)
        else:
            with open(path, "rb") as f:
                data = f.read(4_000_000)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n").replace("\f", "")
    return text


def looks_like_text(text):
    if len(text) < 200:
        return False
    lines = text.count("\n") + 1
    if len(text) / lines > 160:  # minified or table-like
        return False
    digits = sum(c.isdigit() for c in text)
    return digits / len(text) < 0.25


def cut(text):
    if len(text.encode("utf-8")) <= PER_FILE_CAP:
        return text.rstrip() + "\n"
    b = text.encode("utf-8")[:PER_FILE_CAP]
    t = b.decode("utf-8", errors="ignore")
    nl = t.rfind("\n")
    return (t[:nl] if nl > 0 else t).rstrip() + "\n"


def hash_order(paths):
    return sorted(sorted(set(paths)), key=lambda p: hashlib.sha1(p.encode()).hexdigest())


def prose_candidates():
    paths = glob.glob("/usr/share/common-licenses/*")
    paths += glob.glob("/usr/share/doc/*/copyright")
    for root, _, files in os.walk("/usr/share/doc"):
        for f in files:
            low = f.lower()
            base = low[:-3] if low.endswith(".gz") else low
            if (base.startswith("readme") or base.startswith("news") or base.endswith(".txt")
                    or base.endswith(".md") or base.startswith("changelog")):
                paths.append(os.path.join(root, f))
    return [p for p in paths if os.path.isfile(p)]


def c_candidates():
    out = []
    for root, dirs, files in os.walk("/usr/include"):
        dirs.sort()
        rel = os.path.relpath(root, "/usr/include") + "/"
        if any(rel.startswith(d) for d in CXX_DIRS):
            continue
        out += [os.path.join(root, f) for f in files if f.endswith(".h")]
    return out


def c_filter(text):
    return not any(k in text for k in ("namespace ", "template<", "template <", "\nclass ",
                                       "public:", "std::"))


def python_candidates():
    out = []
    base = "/usr/lib/python3.11"
    skip = ("test/", "site-packages/", "dist-packages/")
    for root, dirs, files in os.walk(base):
        dirs.sort()
        rel = os.path.relpath(root, base) + "/"
        if rel.startswith(skip) or "/tests/" in "/" + rel or "idle_test" in rel:
            continue
        out += [os.path.join(root, f) for f in files if f.endswith(".py")]
    return out


def build(domain, paths, out_dir, manifest, accept=lambda t: True):
    seen = set()
    train, held = [], []
    n_train = n_held = n_changelog = 0
    accepted = 0
    for p in hash_order(paths):
        if n_train >= TRAIN_CAP[domain]:
            break
        text = read_text(p)
        if text is None or not looks_like_text(text) or not accept(text):
            continue
        text = cut(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            continue
        is_changelog = "changelog" in os.path.basename(p).lower()
        if is_changelog and n_changelog >= CHANGELOG_SHARE * TRAIN_CAP[domain]:
            continue
        seen.add(digest)
        size = len(text.encode())
        if accepted % 20 == 10:
            if n_held < HELDOUT_CAP:
                take = text
                if n_held + size > HELDOUT_CAP:  # cut the last held-out file at a line boundary
                    b = text.encode()[:HELDOUT_CAP - n_held]
                    t = b.decode("utf-8", errors="ignore")
                    take = t[:max(t.rfind("\n"), 0)] + "\n"
                held.append(take)
                n_held += len(take.encode())
                manifest.append((domain, "heldout", len(take.encode()), digest, p))
        else:
            train.append(text)
            n_train += size
            if is_changelog:
                n_changelog += size
            manifest.append((domain, "train", size, digest, p))
        accepted += 1
    for split, parts in (("train", train), ("heldout", held)):
        with open(os.path.join(out_dir, f"{domain}.{split}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(parts))
    print(f"{domain}: {len(train)} train files ({n_train} bytes), {len(held)} held-out files "
          f"({n_held} bytes)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/corpus")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    manifest = []
    build("prose", prose_candidates(), args.out, manifest)
    build("c", c_candidates(), args.out, manifest, accept=c_filter)
    build("python", python_candidates(), args.out, manifest)
    with open(os.path.join(args.out, "manifest.tsv"), "w", encoding="utf-8") as f:
        f.write("domain\tsplit\tbytes\tsha256\tpath\n")
        for row in manifest:
            f.write("\t".join(str(x) for x in row) + "\n")


if __name__ == "__main__":
    main()
