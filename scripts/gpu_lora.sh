#!/usr/bin/env bash
# Retrain the two shipped adapters on the shipped base in one short call on a lent GPU
# (device tool), ~2.5 minutes: both in parallel, each stopped (resumably) after MAX_MINUTES;
# on 2026-11-27 that cut them at 613 of 1,000 and 595 of 700 steps.
# Usage: [BASE=MODEL_DIR] bash scripts/gpu_lora.sh [MAX_MINUTES]   (outputs packed into $OUT;
# BASE defaults to the shipped base, assets/models/genimg-base)
set -u
MIN=${1:-1.6}
source scripts/gpu_env.sh
for spec in catalog:1000 bathroom:700; do
  name=${spec%%:*}; steps=${spec##*:}
  (timeout 200 python3 -m genimg train-lora --base "${BASE:-assets/models/genimg-base}" --recipe lora/$name/recipe.toml \
    --out $R/lora/$name --device cuda --steps $steps --max-minutes $MIN --export kohya \
    > $R/lora-$name.log 2>&1; echo "lora $name rc=$?" >> $R/lora-$name.log) &
done
wait
el "done"; for f in $R/*.log; do tail -n 3 "$f"; done
python3 scripts/pack_outputs.py pack "$OUT" $R/lora
cat $R/*.log | tr '\r' '\n' | grep -v "it/s\]$" | tail -c 3000000 > "$OUT/train.log"
el packed
