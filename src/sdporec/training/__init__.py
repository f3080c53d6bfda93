"""Training: what a run's settings hold and the default learning rates (`train_config`), the run's set-up
(`run`), the loop (`trainer`), the SFT and preference recipes (`sft`, `preference`), losses (`losses`), the
reference pass (`reference`), processes (`distributed`), logs (`runlog`) and the resumable state (`state`)."""
