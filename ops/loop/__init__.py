"""`relkd loop` and `relkd controller`: the distillation controller wired to the stack."""
