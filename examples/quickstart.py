"""sdporec from Python: built-in data, SFT, S-DPO, an evaluation and a recommendation (the README's
example, with its results printed). Writes data/ and runs/ in the current directory:

    cd /tmp/somewhere && /path/to/sdporec/.venv/bin/python /path/to/sdporec/examples/quickstart.py

A tiny run that shows the API in about a minute on a laptop CPU: at this size (60 users, 2 SFT epochs) the
model is near chance (HR@1 about 0.05 with 20 candidates); `make demo` trains on 800 users for the real
numbers (HR@1 about 0.6). The same calls with bigger settings are the real thing.
"""

import json

import sdporec

sdporec.prepare(out="data", users=60, items=40, genres=4)
common = dict(train="data/train.jsonl", valid="data/valid.jsonl", progress=False)
sdporec.sft(sdporec.SFTConfig(out="runs/sft", titles="data/items.txt", epochs=2, **common))
sdporec.sdpo(model="runs/sft/model", out="runs/sdpo", **common)  # sdporec.dpo(...): DPO, K = 1
metrics = sdporec.evaluate(model="runs/sdpo/model", data="data/test.jsonl", out="runs/eval")
sample = json.loads(open("data/test.jsonl").readline())
recommender = sdporec.Recommender.load("runs/sdpo/model")
ranked = recommender.rank(sample["historyList"], sample["itemList"], top=3)  # [(title, score), ...], best first

print("test HR@1:", round(metrics["hr@1"], 4), "MRR:", round(metrics["mrr"], 4))
for title, score in ranked:
    print(f"{score:9.3f}  {title}")
print("the user's next item was:", sample["trueSelection"])
