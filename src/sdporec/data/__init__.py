"""Data: samples and their files (`samples`), candidate lists and negatives (`candidates`), prompts
(`prompts`), token codecs (`codec`), the batch format (`batching`), importers, the built-in generator and
the train / valid / test splits (`importers`, `synthetic`, `prepare`)."""
