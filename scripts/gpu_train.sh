#!/usr/bin/env bash
# Train every shipped model in one call on a lent GPU machine (device tool), ~9 minutes:
#   base (VAE, then UNet + text encoder) -> two LoRA adapters, and the checker beside them.
# Outputs come back packed (scripts/pack_outputs.py). Each stage's command is the same one a
# user runs on any machine; only --device cuda and the recipes' wall-clock caps differ.
#   BASE_RECIPE=... BASE_INIT=assets/models/genimg-base bash scripts/gpu_train.sh
# continues the shipped base instead (e.g. assets/recipes/base-gpu-more.toml: VAE kept).
#   CHECKER=0 BASE_TIMEOUT=560 BASE_RECIPE=assets/recipes/base-gpu-f4.toml bash scripts/gpu_train.sh
# trains the next plan's base (a 4x VAE, 32x32 latents) alone, ~10 minutes; its 6.5-minute
# UNet leaves no time for the adapters (a second lease: BASE=... bash scripts/gpu_lora.sh).
# The device tool carries at most 64 MiB: .whl (20 MB) plus the tracked tree fits only with
# assets/models/genimg-checker left behind (git rm --cached + .git/info/exclude for the call).
set -u
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, diffusers, transformers, peft; print(torch.__version__, diffusers.__version__, transformers.__version__, peft.__version__)"

# 0. Smoke: every stage at toy size, so a bug costs a minute, not the lease.
el smoke
(timeout 75 python3 -m genimg train-checker --data catalog:64:5:checker --out $R/smoke-checker --steps 3 --device cuda > $R/smoke-checker.log 2>&1; echo $? > $R/smoke-checker.rc) &
timeout 60 python3 -m genimg train-base --recipe assets/recipes/tiny.toml --out $R/smoke --device cuda > $R/smoke.log 2>&1 \
  && timeout 40 python3 -m genimg train-lora --base $R/smoke/model --data catalog:16:3:smoke --out $R/smoke-lora --steps 3 --device cuda >> $R/smoke.log 2>&1
SMOKE=$?
wait
cat $R/smoke-checker.log >> $R/smoke.log
[ "$(cat $R/smoke-checker.rc)" = 0 ] || SMOKE=1
el "smoke rc=$SMOKE"
if [ $SMOKE -ne 0 ]; then tail -40 $R/smoke.log; cp $R/smoke.log "$OUT/"; exit 1; fi

# 1. The checker trains beside the base model (own split, own process; the GPU has room);
#    CHECKER=0 leaves it out (the base alone, e.g. assets/recipes/base-gpu-f4.toml).
[ "${CHECKER:-1}" = 1 ] && el checker start && (timeout 400 python3 -m genimg train-checker --recipe assets/recipes/checker.toml --out $R/genimg-checker --device cuda --max-minutes 4.5 > $R/checker.log 2>&1; echo "checker rc=$?" >> $R/checker.log) &

# 2. Base model (VAE 1.3 min, UNet + text encoder 3.0 min, plus data and samples).
el base start
INIT=(); [ -n "${BASE_INIT:-}" ] && INIT=(--init-from "$BASE_INIT")
timeout ${BASE_TIMEOUT:-400} python3 -m genimg train-base --recipe "${BASE_RECIPE:-assets/recipes/base-gpu.toml}" \
  "${INIT[@]}" --out $R/base --device cuda > $R/base.log 2>&1
el "base rc=$?"; tail -3 $R/base.log

# 3. Two adapters in parallel on the new base.
# Whatever time is left before the call's end (~560 s in, then packing) goes to them.
LEFT=$(( 530 - $(date +%s) + T0 )); MIN=$(python3 -c "print(max(0.2, ($LEFT - 45) / 60))")
el "lora: $LEFT s left, --max-minutes $MIN"
if [ -f $R/base/model/model_index.json ] && [ $LEFT -gt 40 ]; then
  for spec in catalog:1500 bathroom:800; do
    name=${spec%%:*}; steps=${spec##*:}
    (timeout $LEFT python3 -m genimg train-lora --base $R/base/model --recipe lora/$name/recipe.toml --out $R/lora/$name --device cuda --steps $steps --max-minutes $MIN --export kohya > $R/lora-$name.log 2>&1; echo "lora $name rc=$?" >> $R/lora-$name.log) &
  done
fi
wait
el "all done"; tail -2 $R/*.log
python3 scripts/pack_outputs.py pack "$OUT" $R/base $R/lora $R/genimg-checker
cat $R/*.log | tr '\r' '\n' | grep -v "it/s\]$" | tail -c 3000000 > "$OUT/train.log"
el packed; ls -la "$OUT"
