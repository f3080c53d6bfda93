"""Evaluation: metrics (`metrics`), scoring candidates (`scoring`), the one evaluation path for language
models (`evaluate`), paired comparisons (`compare`), the leak audit (`audit`), classical baselines
(`baselines`; SASRec and GRU4Rec in `baseline_models`), reports (`report`) and the recommender (`recommend`)."""
