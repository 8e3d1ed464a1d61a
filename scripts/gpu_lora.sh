#!/usr/bin/env bash
# Retrain the two shipped adapters on the shipped base in one short call on a lent GPU
# (device tool), ~2.5 minutes: both in parallel, each with its whole learning-rate schedule.
# Usage: bash scripts/gpu_lora.sh [MAX_MINUTES]   (outputs packed into $OUT)
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; MIN=${1:-1.6}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
R=/tmp/runs; rm -rf $R; mkdir -p $R
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
for spec in catalog:1000 bathroom:700; do
  name=${spec%%:*}; steps=${spec##*:}
  (timeout 200 python3 -m genimg train-lora --base assets/models/genimg-base --recipe lora/$name/recipe.toml \
    --out $R/lora/$name --device cuda --steps $steps --max-minutes $MIN --export kohya \
    > $R/lora-$name.log 2>&1; echo "lora $name rc=$?" >> $R/lora-$name.log) &
done
wait
el "done"; for f in $R/*.log; do tail -n 3 "$f"; done
python3 scripts/pack_outputs.py pack "$OUT" $R/lora
cat $R/*.log | tr '\r' '\n' | grep -v "it/s\]$" | tail -c 3000000 > "$OUT/train.log"
el packed
