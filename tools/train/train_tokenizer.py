#!/usr/bin/python3
"""Trains the SentencePiece BPE tokenizer (4096 pieces, byte fallback) of the embedded model.

Input: a deterministic sample of the train text of the three domains (every
line of build/corpus/{prose,c,python}.train.txt, up to 600k lines in total;
SentencePiece samples them with its fixed seed). Whitespace is kept as is
(identity normalisation, no collapsing of spaces) so that code indentation
survives, runs of spaces may form pieces, and micromoe's llama (SPM) tokenizer,
which only maps ' ' to U+2581, sees the same text. Newlines and other
characters outside the vocabulary become <0xXX> byte pieces.

Writes build/train/tokenizer.model and tokenizer.vocab.
Usage: /usr/bin/python3 tools/train/train_tokenizer.py
"""
import os
import sentencepiece as spm

os.makedirs("build/train", exist_ok=True)
spm.SentencePieceTrainer.train(
    input=",".join(f"build/corpus/{d}.train.txt" for d in ("prose", "c", "python")),
    model_prefix="build/train/tokenizer",
    model_type="bpe",
    vocab_size=4096,
    byte_fallback=True,
    character_coverage=0.9995,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    split_by_whitespace=True,
    allow_whitespace_only_pieces=True,
    split_digits=True,
    unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    input_sentence_size=600000,
    shuffle_input_sentence=True,
    max_sentence_length=8192,
    num_threads=1,
    minloglevel=1,
)
