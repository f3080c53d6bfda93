#!/usr/bin/env bash
# bench/gpu_items.sh's inputs, too large to copy to a remote GPU machine in one transfer, as two parts of at most
# 60 MB each: SmolLM2's GGUF (98 MB) split in two, LastFM's resampled files gzipped (7.5 MB) and a wheel of the gguf
# package (transformers reads GGUF files through it; the GPU image may not have it and cannot download it), under
# .carry/ (ignored by git).
#   here:    GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf LASTFM=../shared/data/lastfm/resampled \
#              bash bench/gpu_items_parts.sh split
#   GPU:     after copying .carry/a there: bash bench/gpu_items_parts.sh check a
#            then, on the same machine (.carry/a still there), after copying .carry/b:
#              bash bench/gpu_items_parts.sh join && GGUF=.carry/model.gguf LASTFM=.carry/lastfm \
#              bash bench/gpu_items.sh $OUT/items
# `join` checks every part and the joined file against the sums `split` wrote, and stops if one differs.
set -euo pipefail
C=.carry
case "${1:-}" in
  split)
    [ -n "${GGUF:-}" ] && [ -n "${LASTFM:-}" ] || { echo "usage: GGUF=FILE LASTFM=DIR $0 split" >&2; exit 2; }
    rm -rf "$C"; mkdir -p "$C/a" "$C/b/lastfm"
    head -c 56M "$GGUF" > "$C/a/model.part"
    tail -c +$((56 * 1024 * 1024 + 1)) "$GGUF" > "$C/b/model.part"
    for f in lastfm-train.json lastfm-val.json; do gzip -c "$LASTFM/$f" > "$C/b/lastfm/$f.gz"; done
    ${PIP:-pip} download "gguf==${GGUF_VERSION:-0.19.0}" --no-deps -q -d "$C/a"
    (cd "$C/a" && sha256sum model.part gguf-*.whl > SHA256SUMS)
    (cd "$C/b" && sha256sum model.part lastfm/*.gz > SHA256SUMS)
    sha256sum < "$GGUF" | cut -d' ' -f1 > "$C/b/model.sha256"
    du -sb "$C/a" "$C/b"
    ;;
  check)
    (cd "$C/${2:?which part}" && sha256sum -c SHA256SUMS)
    ;;
  join)
    (cd "$C/a" && sha256sum -c SHA256SUMS) && (cd "$C/b" && sha256sum -c SHA256SUMS)
    cat "$C/a/model.part" "$C/b/model.part" > "$C/model.gguf"
    [ "$(sha256sum < "$C/model.gguf" | cut -d' ' -f1)" = "$(cat "$C/b/model.sha256")" ] || {
      echo "joined GGUF differs from the one split" >&2; exit 1; }
    PY=${PY:-python3}   # the interpreter bench/gpu_items.sh runs (its PY)
    $PY -c "import gguf" 2>/dev/null || $PY -m pip install -q --no-deps "$C"/a/gguf-*.whl
    mkdir -p "$C/lastfm"
    for f in "$C"/b/lastfm/*.gz; do gunzip -c "$f" > "$C/lastfm/$(basename "$f" .gz)"; done
    ls -la "$C/model.gguf" "$C/lastfm"
    ;;
  *) echo "usage: $0 split | check a|b | join" >&2; exit 2 ;;
esac
