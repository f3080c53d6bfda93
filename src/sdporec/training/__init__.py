"""Training: what a run's settings hold and the default learning rates (`train_config`), the loop (`trainer`),
the SFT and preference recipes (`sft`, `preference`), losses (`losses`), the reference pass (`reference`),
processes (`distributed`) and logs (`runlog`)."""
