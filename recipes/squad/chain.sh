#!/bin/bash
# The SQuAD recipes chained, as behind README's last two reader rows and docs/reader.md "The recipes chained":
# BM25 negatives -> recipes/squad/retriever.yaml -> that pair's index of the SQuAD-open corpus -> its top passages
# for train, dev subset and dev-a -> recipes/squad/reader.yaml on its negatives -> reading 1,000 dev-a questions
# -> the peer (benchmarks/reader_peer.py) trained for the reader's wall time and reading the same passages.
# ~3 h on 2 idle AVX512-BF16 cores (~2 h 10 min to the reader's figures, ~55 min for the peer). A step whose output
# exists is skipped; training resumes from its checkpoints, so rerunning after an interruption continues (the two
# readings rerun: ~1 min from the reader's cache, ~18 min for the peer). Run from anywhere:
# `bash recipes/squad/chain.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -d .venv ]; then source .venv/bin/activate; fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SQUAD=../shared/data/squad
B=runs/bench
PAIR=$B/retriever-squad-full
step() { echo "=== $(date -u +%FT%T) $*"; }
if [ ! -s $B/squad-train-bm25.json ]; then
  step mine-negatives
  dpr-hf mine-negatives --data $SQUAD/squad1.1-train.json.gz --passages $SQUAD/squad1.1-train.json.gz \
    --output $B/squad-train-bm25.json --num-negatives 5
fi
if [ ! -f $PAIR/passage_encoder/model.safetensors ]; then
  step train-retriever; dpr-hf train-retriever recipes/squad/retriever.yaml --resume
fi
if [ ! -f $B/squad-corpus.jsonl ]; then
  step corpus  # every SQuAD train + dev-a paragraph (19,961), as benchmarks/common.py open_squad builds it
  python -c "
import sys; sys.path.insert(0, 'benchmarks'); import common
common.open_squad(0)[0].select_columns(['id', 'title', 'text']).to_json('$B/squad-corpus.jsonl.tmp', lines=True)"
  mv $B/squad-corpus.jsonl.tmp $B/squad-corpus.jsonl
fi
if [ ! -f $B/squad-index/manifest.json ]; then
  step encode; dpr-hf encode --passage-encoder $PAIR/passage_encoder --passages $B/squad-corpus.jsonl \
    --output $B/squad-embeddings
  step build-index; dpr-hf build-index --embeddings $B/squad-embeddings --output $B/squad-index
fi
retrieve() {  # QUESTIONS TOP_K OUTPUT_DIR
  if [ ! -f "$3/metrics.json" ]; then
    step "retrieve $1"
    dpr-hf evaluate-retrieval --retriever dense --model $PAIR --index $B/squad-index --questions "$1" \
      --top-k "$2" --output-dir "$3"
  fi
}
retrieve $SQUAD/squad1.1-dev-a.json.gz 20 $B/squad-deva-dense
retrieve $SQUAD/squad1.1-train.json.gz 10 $B/squad-train-dense
retrieve data/quickstart/squad-dev-subset.json.gz 10 $B/squad-dev-dense
if [ ! -f $B/reader-squad/reader/model.safetensors ]; then
  step train-reader; dpr-hf train-reader recipes/squad/reader.yaml --resume
fi
step reader-ranking
python benchmarks/reader_ranking.py --reader $B/reader-squad/reader --results $B/squad-deva-dense/results.json \
  --questions 1000 --weights 1,2 --gold
step reader-peer  # same questions, the reader's training wall time, the same top passages
BUDGET=$(python -c "import json; print(json.load(open('$B/reader-squad/metrics.json'))['train_runtime_s'] / 60)")
if [ -f $B/reader-peer/peer_training.json ]; then MODE=--eval-only; else MODE=--resume; fi
python benchmarks/reader_peer.py --budget-minutes "$BUDGET" --max-train-samples 12000 \
  --results $B/squad-deva-dense/results.json --questions 1000 --output $B/reader-peer $MODE
