"""The commands: one module per command, holding its typed config and its runner (`run_*`), on top of the
library (`sdporec.training`, `sdporec.evaluation`, `sdporec.models`, `sdporec.data`), which never imports
them. `settings` turns a config dataclass into flags and reads YAML files."""
