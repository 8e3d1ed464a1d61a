"""Build CLIP's tokenizer files (vocab.json, merges.txt) offline from its BPE merges.

No package ships CLIP's vocab.json; open_clip ships `bpe_simple_vocab_16e6.txt.gz`, the
merges CLIP was trained with. The vocabulary follows CLIP's SimpleTokenizer
(openai/CLIP, clip/simple_tokenizer.py): 256 byte symbols, the same with "</w>", one
symbol per merge, then the two special tokens -> 49,408 entries.

usage: python scripts/build_tokenizer.py bpe_simple_vocab_16e6.txt.gz assets/tokenizer
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build(bpe_gz: Path, out: Path) -> None:
    with gzip.open(bpe_gz) as f:
        merges = f.read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs))
    print(f"{len(vocab)} tokens, {len(pairs)} merges -> {out}")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
