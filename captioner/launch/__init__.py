"""The process a run lives in: Hydra resolvers and callbacks, DDP ranks under Hydra, GPU leases for
parallel runs, and quieting known library noise."""
