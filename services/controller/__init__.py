"""The distillation controller: retrain on fresh labels, gate, roll out or refuse (docs/loop.md)."""
