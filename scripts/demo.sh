#!/usr/bin/env bash
# `make demo`: the default Banking77 bundle, built once and reused, then a few predictions.
#  - If the full-quality bundle (artifacts/banking77/bundle, from `make bundle`) exists, it is used.
#  - Otherwise the demo trains with the short `quick` profile into artifacts/banking77-quick/ (reused on
#    later runs) so that it finishes in minutes on 2 CPU cores, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
LRSL=${VENV:-.venv}/bin/lrsl-rt
FULL=artifacts/banking77
QUICK=artifacts/banking77-quick
DATA=${LRSL_DATASETS_DIR:-../shared/datasets}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ -f "$FULL/bundle/manifest.json" ]; then
  ART=$FULL
  echo "demo: using the full-quality bundle $ART/bundle"
else
  ART=$QUICK
  echo "demo: no full-quality bundle at $FULL/bundle; using the short 'quick' training profile"
  echo "      (full quality: \`make bundle\`; the README says how long its recorded runs took)"
  if [ ! -f "$ART/checkpoint/lrsl.json" ]; then
    echo "demo: [1/2] training on Banking77 with --profile quick (50 texts per class, a few minutes)"
    "$PY" -m train --dataset banking77 --profile quick --threads 2 --out "$ART/checkpoint"
  else
    echo "demo: [1/2] reusing checkpoint $ART/checkpoint"
  fi
  if [ ! -f "$ART/bundle/manifest.json" ]; then
    echo "demo: [2/2] exporting the int8 ONNX bundle"
    "$PY" -m export "$ART/checkpoint" "$ART/bundle" --precision int8
  else
    echo "demo: [2/2] reusing bundle $ART/bundle"
  fi
fi

echo
echo "demo: bundle summary"
"$LRSL" info --bundle "$ART/bundle" | sed -n '/^bundle:/,/^metrics/{/^metrics/!p}'
echo
echo "demo: accuracy this bundle reached (measured by the export on Banking77 test, int8, through the runtime)"
"$PY" - "$ART/bundle/manifest.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1], encoding="utf-8"))["metrics"]
t = m["bundle"].get("test") or m["bundle"]["dev"]
print(f"  classifier alone {100 * t['accuracy_classifier']:.2f}%  ->  with LRSL {100 * t['accuracy_lrsl']:.2f}%"
      f"  (n={t['n']}; hard {100 * t['hard_share']:.1f}%: {100 * t['hard_accuracy_classifier']:.1f}% -> "
      f"{100 * t['hard_accuracy_lrsl']:.1f}%)")
PYEOF
if [ "$ART" = "$QUICK" ]; then
  echo "  (quick profile: below the full-quality bundle by design; \`make bundle\` builds that one, and the"
  echo "   README's Results say what it reached)"
fi
echo
echo "demo: predictions (label, hard flag, classifier's label before reranking)"
"$LRSL" predict --bundle "$ART/bundle" --format table \
  "I still have not received my new card" \
  "How long does it take for a card to be delivered?" \
  "My top up did not go through, why?" \
  "I think someone stole my card, what should I do?" \
  "What exchange rate do you use when I pay abroad?" \
  "Why was I charged an extra fee for paying by card?" \
  "Can I get a physical card in addition to my virtual one?" \
  "The ATM gave me less cash than I asked for"
echo
echo "demo: bundle at $ART/bundle"
echo "next (from this folder; lrsl-rt finds this bundle, see the README's Command line):"
echo "      $LRSL predict --explain \"your text\"   (why a label was chosen)"
echo "      $LRSL eval --input $DATA/banking77/test.csv --label-field category"
echo "      python -m benchmarks.latency --bundle $ART/bundle --threads 2   (size your hardware)"
