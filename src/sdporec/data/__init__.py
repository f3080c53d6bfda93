"""Data: samples and their files (`samples`), candidate lists and negatives (`candidates`), prompts
(`prompts`), token codecs (`codec`), the batch format (`batching`), importers and the built-in generator
(`importers`, `synthetic`, `prepare`)."""
