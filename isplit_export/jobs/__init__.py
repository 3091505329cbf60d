"""The jobs: one module per job, each a thin orchestration over the stage libraries (docs/architecture.md)."""
