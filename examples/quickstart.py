"""sdporec from Python: built-in data, SFT, S-DPO, an evaluation and a recommendation.

A tiny run that shows the API in about a minute on a laptop CPU: at this size (60 users, 2 SFT epochs) the
model is near chance (HR@1 about 0.05 with 20 candidates); `make demo` trains on 800 users for the real
numbers (HR@1 about 0.6). The same calls with bigger settings are the real thing.

    .venv/bin/python examples/quickstart.py [OUT]        (default OUT: runs/quickstart)
"""

import json
import sys
from pathlib import Path

import sdporec

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart")
data = out / "data"

# 1. Samples: each a history, 20 candidate titles and the target (here the built-in generator).
sdporec.prepare(out=str(data), users=60, items=40, genres=4, overwrite=True)

# 2. SFT on the built-in backbone, then S-DPO from it; the configs are the CLI's.
common = dict(train=str(data / "train.jsonl"), valid=str(data / "valid.jsonl"), eval_samples=100,
              batch_size=16, progress=False, overwrite=True)
sdporec.sft(sdporec.SFTConfig(out=str(out / "sft"), titles=str(data / "items.txt"), epochs=2, **common))
summary = sdporec.sdpo(model=str(out / "sft" / "model"), out=str(out / "sdpo"), **common)
print("S-DPO best validation HR@1:", summary["best_valid_hr@1"])

# 3. Metrics on the test split (also written to OUT/eval/metrics.json and predictions.jsonl).
metrics = sdporec.evaluate(model=str(out / "sdpo" / "model"), data=str(data / "test.jsonl"),
                           out=str(out / "eval"), progress=False, overwrite=True)
print("test HR@1:", round(metrics["hr@1"], 4), "MRR:", round(metrics["mrr"], 4))

# 4. A recommender ranks candidates for one history.
sample = json.loads((data / "test.jsonl").read_text().splitlines()[0])
recommender = sdporec.Recommender.load(str(out / "sdpo" / "model"))
for title, score in recommender.rank(sample["historyList"], sample["itemList"], top=3):
    print(f"{score:9.3f}  {title}")
print("the user's next item was:", sample["trueSelection"])
