"""Evaluation: metrics (`metrics`), the one evaluation path for language models (`evaluate`), paired
comparisons (`compare`), classical baselines (`baselines`, `sequential`), reports (`report`) and the
recommender (`recommend`)."""
