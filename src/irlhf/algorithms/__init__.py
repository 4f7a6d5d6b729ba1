"""Training algorithms: one module each, a Config dataclass and one visible loop."""
